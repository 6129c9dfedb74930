async () => {
  // Explain in a banner why the webcam cannot be used (no permission, no camera, no secure context).
  const place = (el) => {  // just above the status banner
    const status = document.getElementById("vigil-status-slot");
    if (status && status.parentElement) status.parentElement.insertBefore(el, status);
    else document.body.prepend(el);
  };
  let shown = "";
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
    el.style.display = text ? "block" : "none";
  };
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
