async () => {
  // Explain in a banner why the webcam cannot be used (no permission, no camera, no secure context).
  const place = (el) => {  // just above the status banner
    const status = document.getElementById("vigil-status-slot");
    if (status && status.parentElement) status.parentElement.insertBefore(el, status);
    else document.body.prepend(el);
  };
  let shown = "";
  // the camera's problems matter on the webcam tab only: the banner is hidden while another tab is open
  const cameraVisible = () => {
    const camera = document.getElementById("vigil-camera");
    return !!(camera && camera.offsetParent !== null);
  };
  const refresh = () => {
    const el = document.getElementById("vigil-camera-banner");
    if (el) el.style.display = el.textContent && cameraVisible() ? "block" : "none";
  };
  const show = (text, kind) => {
    let el = document.getElementById("vigil-camera-banner");
    if (!el && !text) return;
    if (!el) {
      el = document.createElement("div");
      el.id = "vigil-camera-banner";
      el.setAttribute("role", "alert");
      el.style.cssText = "__BANNER_STYLE__ padding:8px 12px;border-radius:6px;margin:4px 0;font-weight:600;";
      place(el);
    }
    if (!text && kind !== shown) return;
    shown = text ? kind : "";
    el.textContent = text;
    refresh();
  };
  setInterval(refresh, 300);
  // the file being watched plays in step with the stream clock (the server's position, every second)
  let clockT = null, clockAt = 0;
  setInterval(() => {
    const clock = document.getElementById("vigil-clock");
    const video = document.querySelector("#vigil-watched video");
    if (!clock || !video) return;
    if (clock.dataset.playing !== "1") {
      if (!video.paused) video.pause();
      clockT = null;
      return;
    }
    const t = parseFloat(clock.dataset.t);
    if (t !== clockT) { clockT = t; clockAt = performance.now(); }
    const now = clockT + (performance.now() - clockAt) / 1000;  // between updates the clock runs on
    if (video.readyState >= 1 && Math.abs(video.currentTime - now) > 0.75) video.currentTime = now;
    if (video.paused && !video.ended) {
      video.muted = true;  // a muted video may play without a new gesture
      video.play().catch(() => {});
    }
  }, 250);
  const explain = (err) => {
    const name = (err && err.name) || "";
    if (name === "NotAllowedError" || name === "SecurityError")
      return "Camera permission denied: allow the camera for this page (site settings next to the address) " +
        "and reload, or play a video file or stream instead.";
    if (name === "NotFoundError" || name === "OverconstrainedError")
      return "No camera found: connect one, or play a video file or stream instead.";
    if (name === "NotReadableError") return "The camera is busy in another application.";
    return "The camera could not be opened: " + ((err && err.message) || err);
  };
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia) {
    show(window.isSecureContext ? "This browser gives no camera access; play a video file or stream instead." :
      "Camera access needs https:// or localhost: open the app that way, or play a video file or stream instead.",
      "support");
    return [];
  }
  if (!media.__vigil) {
    const original = media.getUserMedia.bind(media);
    media.getUserMedia = async (constraints) => {
      try {
        const stream = await original(constraints);
        if (constraints && constraints.video) show("", "camera");
        return stream;
      } catch (err) {
        if (constraints && constraints.video) show(explain(err), "camera");
        throw err;
      }
    };
    media.__vigil = true;
  }
  try {
    const status = await navigator.permissions.query({name: "camera"});
    const update = () => {
      if (status.state === "denied") show(explain({name: "NotAllowedError"}), "camera");
      else show("", "camera");
    };
    update();
    status.onchange = update;
  } catch (err) {}
  try {
    const devices = await media.enumerateDevices();
    if (!devices.some((d) => d.kind === "videoinput")) show(explain({name: "NotFoundError"}), "camera");
  } catch (err) {}
  return [];
}
