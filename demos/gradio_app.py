"""The live-video chat app: a webcam (or a video file / stream played as live) watched by a session, a chat that
answers at any time and speaks up by itself, settings per tab, and live figures of what the memory keeps.

``build_app`` builds the gr.Blocks for a running orchestrator (``vigil serve --ui`` mounts it at /ui);
``run_demo`` serves it standalone (``vigil demo``). Each browser tab gets its own session, ended when the tab
closes or goes quiet. Beside the streaming events, plain endpoints (start_session, push_frame, ask, events,
stats, add_instruction, play, stop, end_session) let scripts and tests drive the same sessions with gradio_client.
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from assistant.config import VigilConfig
from assistant.orchestrator import Orchestrator
from demos.ui_sessions import (
    PROACTIVE_MODES,
    STREAM_URL_SCHEMES,
    SessionRegistry,
    SessionSettings,
    UiError,
    UiSession,
    make_settings,
)

log = logging.getLogger(__name__)

POLL_EVERY_S = 0.5
"""How often a tab pulls new events (proactive messages appear within this)."""
FIGURES_EVERY_S = 1.0
CAMERA_EVERY_S = 0.2
"""Webcam frames reach the server at most this often (5 per second; the session's fps thins them further)."""
ANSWER_TIMEOUT_S = 120.0
TINY_MIN_NEW_TOKENS = 12
DEFAULT_IDLE_TIMEOUT_S = 120.0
"""A tab polls twice a second, so a session quiet this long has lost its client."""

_BANNER_STYLE = {
    "error": "background:#fde8e8;border:1px solid #f05252;color:#771d1d;",
    "warning": "background:#fdf6b2;border:1px solid #c27803;color:#723b13;",
    "info": "background:#e1effe;border:1px solid #3f83f8;color:#1e429f;",
}

CAMERA_JS = """
async () => {
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
      el.style.cssText = "STYLE padding:8px 12px;border-radius:6px;margin:4px 0;font-weight:600;";
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
""".replace("STYLE", _BANNER_STYLE["error"])


def banner(kind: str, text: str, elem_id: str) -> str:
    """An HTML banner (error, warning or info) with a stable id."""
    return (
        f'<div id="{elem_id}" class="vigil-banner vigil-{kind}" role="alert" style="{_BANNER_STYLE[kind]}'
        f'padding:8px 12px;border-radius:6px;margin:4px 0;font-weight:600;">{html.escape(text)}</div>'
    )


def model_banner(model_name: str | None) -> str:
    """A warning when the model is the random-weight test model (its answers are noise)."""
    from assistant.models.tiny import is_tiny_model

    if model_name and (model_name == "tiny" or is_tiny_model(model_name)):
        return banner(
            "warning",
            "Test model: the tiny model has random weights, so its answers are noise. Start the app with a real "
            "checkpoint (vigil demo --model Qwen/Qwen2.5-VL-3B-Instruct) for meaningful answers.",
            "vigil-model-banner",
        )
    return ""


def status_banner(ui: UiSession | None, problem: str | None = None) -> str:
    """The tab's error banner: engine unavailable, engine/perception errors, or an ended session."""
    if problem:
        return banner("error", problem, "vigil-error-banner")
    if ui is None:
        return banner(
            "error", "No session: the engine is unavailable. Reload the page to try again.", "vigil-error-banner"
        )
    if ui.ended is not None and ui.ended != "restarted":
        text = f"This session ended ({ui.ended}). Press “Apply & restart” to start a new one."
        return banner("warning", text, "vigil-ended-banner")
    if ui.error:
        return banner("error", f"Error: {ui.error}", "vigil-error-banner")
    if ui.playing:
        return banner("info", f"Playing {ui.playing} as live; the camera is paused.", "vigil-playing-banner")
    return ""


def stats_markdown(stats: dict[str, Any]) -> str:
    """One line of live numbers for the panel."""
    if "processed_frames" not in stats:
        return "No session."
    dropped = stats["frames_dropped"]
    reasons = ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "none"
    latency = (
        f"first token **{stats['last_ttft_s']:.2f} s**, total **{stats['last_total_s']:.2f} s**"
        if stats["last_ttft_s"] is not None
        else "no answer yet"
    )
    return (
        f"Stream **{stats['stream_t']:.1f} s** · frames processed **{stats['processed_frames']}**, "
        f"dropped **{sum(dropped.values())}** ({reasons}) · tokens dropped **{stats['drop_ratio']:.0%}** · "
        f"memory **{stats['memory_tokens']} / {stats['memory_budget']}** tokens · last answer: {latency}"
    )


def figures(ui: UiSession) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Drop ratio, memory tokens and answer latency over stream time, as plot data (numeric columns even when
    empty, so the plots get numeric axes from the start)."""

    def frame(rows: list[tuple], columns: dict[str, str]) -> pd.DataFrame:
        data = list(zip(*rows, strict=True)) if rows else [[] for _ in columns]
        return pd.DataFrame(
            {name: pd.Series(col, dtype=dtype) for (name, dtype), col in zip(columns.items(), data, strict=True)}
        )

    drops = frame(list(ui.drops), {"t": "float64", "drop_ratio": "float64"})
    memory = frame(list(ui.memory), {"t": "float64", "tokens": "int64"})
    rows = [(t, s, "first token") for t, s, _ in ui.latency] + [(t, s, "total") for t, _, s in ui.latency]
    latency = frame(sorted(rows, key=lambda r: r[0]), {"t": "float64", "seconds": "float64", "metric": "string"})
    return drops, memory, latency


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(
    orchestrator: Orchestrator,
    config: VigilConfig,
    *,
    model_name: str | None = None,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    allow_urls: Sequence[str] | None = None,
    answer_options: dict[str, Any] | None = None,
) -> gr.Blocks:
    """The live-video chat app for a running orchestrator; launches nothing.

    Handlers are coroutines, so sessions run on the loop of the server that serves the app. ``allow_urls`` are the
    stream URL prefixes a tab may ask the server to play (default: ``config.server.video_allow``); uploaded files
    can always be played. Sessions of tabs quiet for ``idle_timeout_s`` are closed. ``answer_options`` go with
    every question to the engine (default: none, except at least a few tokens from the random-weight test model,
    whose first token is often the end, so that its answers visibly stream).
    """
    if model_name is None and orchestrator.adapter is not None:
        model_name = getattr(orchestrator.adapter, "name", None)
    tiny = bool(model_banner(model_name))
    if answer_options is None:
        answer_options = {"min_new_tokens": min(TINY_MIN_NEW_TOKENS, config.engine.max_new_tokens)} if tiny else {}
    registry = SessionRegistry(orchestrator, config, idle_timeout_s=idle_timeout_s)
    url_prefixes = tuple(config.server.video_allow if allow_urls is None else allow_urls)
    max_question = config.server.limits.max_question_chars
    max_frame_bytes = config.server.limits.max_frame_bytes
    defaults = SessionSettings.defaults(config)

    # -- helpers -------------------------------------------------------------------------------------------
    def lookup(ui_id: str | None) -> UiSession:
        try:
            return registry.get(ui_id)
        except UiError as exc:
            raise gr.Error(str(exc)) from None

    def fail(exc: Exception) -> gr.Error:
        return gr.Error(str(exc))

    async def open_session(settings: SessionSettings, session_config: VigilConfig, owner: str | None) -> UiSession:
        try:
            return await registry.open(settings, session_config, owner)
        except UiError as exc:
            raise fail(exc) from None

    def playable(url: str | None, upload: str | None) -> tuple[str, str]:
        if upload:
            return upload, Path(upload).name
        url = (url or "").strip()
        if not url:
            raise UiError("choose a video file or enter a stream URL")
        if not url.lower().startswith(STREAM_URL_SCHEMES):
            raise UiError(
                f"enter a stream URL ({', '.join(s.rstrip(':/') for s in STREAM_URL_SCHEMES)}) or upload a file"
            )
        if not any(url.startswith(prefix) for prefix in url_prefixes):
            raise UiError("this server does not play stream URLs it was not told to allow (server.video_allow)")
        return url, url

    def read_frame(path: str | None) -> bytes:
        if not path:
            raise UiError("no frame image was sent")
        size = os.path.getsize(path)
        if size > max_frame_bytes:
            raise UiError(f"the frame has {size} bytes; at most {max_frame_bytes} are allowed")
        return Path(path).read_bytes()

    # -- browser events ------------------------------------------------------------------------------------
    async def on_load(request: gr.Request) -> tuple[Any, ...]:
        settings, session_config = make_settings(
            config, defaults.fps, defaults.drop_threshold, defaults.budget_tokens, defaults.proactive
        )
        try:
            ui = await registry.open(settings, session_config, owner=request.session_hash if request else None)
        except UiError as exc:
            return None, [], status_banner(None, f"Engine unavailable: {exc}. Reload the page to try again.")
        ui.sync()
        ui.sent_version = ui.version
        return ui.ui_id, ui.chat(), status_banner(ui)

    async def on_unload(request: gr.Request) -> None:
        if request is not None and request.session_hash:
            await registry.close_owner(request.session_hash, "tab closed")

    async def on_camera(frame: np.ndarray | None, ui_id: str | None) -> None:
        if frame is None or ui_id not in registry.sessions:
            return
        ui = registry.sessions[ui_id]
        if ui.live is None or ui.live.closed:
            return
        try:
            ui.push(frame, camera=True)
        except UiError as exc:  # a broken camera frame fails alone
            log.debug("camera frame rejected: %s", exc)

    async def on_ask(question: str, ui_id: str | None) -> AsyncIterator[tuple[Any, Any, Any]]:
        ui = lookup(ui_id)
        try:
            answer_id, done = ui.ask(question, max_question, **answer_options)
        except UiError as exc:
            raise fail(exc) from None
        ui.sent_version = ui.version
        yield ui.chat(), "", gr.skip()
        async for _ in ui.follow_answer(answer_id, done, ANSWER_TIMEOUT_S):
            ui.sent_version = ui.version
            yield ui.chat(), gr.skip(), status_banner(ui)

    async def on_poll(ui_id: str | None) -> tuple[Any, Any]:
        ui = registry.sessions.get(ui_id or "")
        if ui is None:
            return gr.skip(), gr.skip()
        ui.touch()
        ui.sync()
        if ui.version == ui.sent_version:
            return gr.skip(), gr.skip()
        ui.sent_version = ui.version
        return ui.chat(), status_banner(ui)

    async def on_figures(ui_id: str | None) -> tuple[Any, ...]:
        ui = registry.sessions.get(ui_id or "")
        if ui is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        ui.sync()
        text = stats_markdown(ui.stats())
        if ui.figures_version == ui.sent_figures:
            return gr.skip(), gr.skip(), gr.skip(), text
        ui.sent_figures = ui.figures_version
        drops, memory, latency = figures(ui)
        budget = ui.settings.budget_tokens if ui.settings else config.memory.budget_tokens
        span = [0.0, max(1.0, ui.live.stream_t if ui.live else 0.0)]  # one time axis for the three plots
        return (
            gr.LinePlot(value=drops, x_lim=span),
            gr.LinePlot(value=memory, x_lim=span, y_lim=[0, budget], title=f"Memory tokens (budget {budget})"),
            # an empty frame with a colour column would leave the chart unable to draw later points
            gr.ScatterPlot(value=latency if len(latency) else None, x_lim=span),
            text,
        )

    async def on_apply(
        fps: Any, threshold: Any, budget: Any, proactive: str, instructions: str, ui_id: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        try:
            settings, session_config = make_settings(config, fps, threshold, budget, proactive, instructions)
        except UiError as exc:
            gr.Warning(str(exc))
            return gr.skip(), gr.skip(), gr.skip(), banner("error", str(exc), "vigil-settings-error")
        ui = registry.sessions.get(ui_id or "")
        try:
            if ui is None:
                ui = await registry.open(settings, session_config, request.session_hash if request else None)
            else:
                await registry.restart(ui, settings, session_config)
        except UiError as exc:
            return gr.skip(), gr.skip(), status_banner(None, str(exc)), ""
        ui.sent_version = ui.version
        return (
            ui.ui_id,
            ui.chat(),
            status_banner(ui),
            banner("info", f"Applied: {settings.describe()}", "vigil-settings-ok"),
        )

    async def on_instruction(text: str, ui_id: str | None) -> tuple[Any, Any]:
        ui = lookup(ui_id)
        try:
            ui.add_instruction(text)
        except UiError as exc:
            raise fail(exc) from None
        ui.sent_version = ui.version
        return ui.chat(), ""

    async def on_play(upload: str | None, url: str | None, ui_id: str | None) -> tuple[Any, Any]:
        ui = lookup(ui_id)
        try:
            spec, label = playable(url, upload)
            await ui.play(spec, label)
        except UiError as exc:
            raise fail(exc) from None
        ui.sent_version = ui.version
        return ui.chat(), status_banner(ui)

    async def on_stop(ui_id: str | None) -> tuple[Any, Any]:
        ui = lookup(ui_id)
        await ui.stop_playback()
        ui.sync()
        ui.sent_version = ui.version
        return ui.chat(), status_banner(ui)

    # -- plain endpoints (gradio_client) -------------------------------------------------------------------
    async def api_start(
        fps: Any, drop_threshold: Any, budget_tokens: Any, proactive: str, instructions: str, request: gr.Request
    ) -> dict[str, Any]:
        try:
            settings, session_config = make_settings(
                config, fps, drop_threshold, budget_tokens, proactive, instructions
            )
        except UiError as exc:
            raise fail(exc) from None
        ui = await open_session(settings, session_config, request.session_hash if request else None)
        return ui.stats()

    async def api_push(session_id: str, frame: str | None, t: Any) -> dict[str, Any]:
        ui = lookup(session_id)
        try:
            status = ui.push(read_frame(frame), None if t in (None, "") else t)
        except UiError as exc:
            raise fail(exc) from None
        live = ui.live
        return {
            "status": status,
            "accepted": status == "accepted",
            "processed_frames": live.processed_frames,
            "frames_dropped": dict(live.frames_dropped),
        }

    async def api_ask(session_id: str, question: str) -> dict[str, Any]:
        ui = lookup(session_id)
        try:
            answer_id, done = ui.ask(question, max_question, **answer_options)
        except UiError as exc:
            raise fail(exc) from None
        async for _ in ui.follow_answer(answer_id, done, ANSWER_TIMEOUT_S):
            pass
        if not done.done():
            raise gr.Error(f"no answer within {ANSWER_TIMEOUT_S:.0f} s")
        if done.cancelled():
            raise gr.Error("the answer was cancelled")
        if done.exception() is not None:
            raise gr.Error(f"the engine failed: {done.exception()}")
        event = done.result()
        return {
            "answer_id": answer_id,
            "t": round(event.t, 3),
            "text": event.text,
            "finish_reason": event.finish_reason,
            "ttft_s": round(event.ttft_s, 4),
            "total_s": round(event.total_s, 4),
            "prompt_tokens": event.prompt_tokens,
            "cached_tokens": event.cached_tokens,
            "generated_tokens": event.generated_tokens,
        }

    async def api_events(session_id: str, after: Any) -> dict[str, Any]:
        ui = lookup(session_id)
        try:
            number = 0.0 if after in (None, "") else float(after)
        except (TypeError, ValueError):
            number = -1.0
        if not (number >= 0 and number == int(number)):
            raise gr.Error(f"after must be an event sequence number >= 0, got {after!r}")
        cursor = int(number)
        live = ui.live
        events = live.events.since(max(0, cursor))[:1000] if live else []
        return {
            "live_session_id": live.session_id if live else None,
            "events": [e.to_dict() for e in events],
            "last_seq": events[-1].seq if events else cursor,
        }

    async def api_stats(session_id: str) -> dict[str, Any]:
        ui = lookup(session_id)
        ui.sync()
        return ui.stats()

    async def api_instruction(session_id: str, text: str) -> dict[str, Any]:
        ui = lookup(session_id)
        try:
            instruction = ui.add_instruction(text)
        except UiError as exc:
            raise fail(exc) from None
        return {"instruction": instruction, "instructions": list(ui.settings.instructions)}

    async def api_play(session_id: str, upload: str | None, url: str | None) -> dict[str, Any]:
        ui = lookup(session_id)
        try:
            spec, label = playable(url, upload)
            await ui.play(spec, label)
        except UiError as exc:
            raise fail(exc) from None
        return {"playing": ui.playing}

    async def api_stop(session_id: str) -> dict[str, Any]:
        return {"stopped": await lookup(session_id).stop_playback()}

    async def api_end(session_id: str) -> dict[str, Any]:
        return {"closed": await registry.close(session_id or "", "ended by client")}

    # -- layout --------------------------------------------------------------------------------------------
    with gr.Blocks(title="Vigil — live video chat", analytics_enabled=False) as demo:
        state = gr.State(None)
        gr.Markdown(
            "## Vigil — live video chat\nA video model watches the stream, speaks up on its own, and answers any time."
        )
        slot: dict[str, Any] = {"container": False, "padding": False, "min_height": 0}
        gr.HTML(model_banner(model_name), elem_id="vigil-model-slot", **slot)
        status = gr.HTML("", elem_id="vigil-status-slot", **slot)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                with gr.Tab("Webcam"):
                    camera = gr.Image(
                        sources=["webcam"],
                        streaming=True,
                        type="numpy",
                        label="Camera (press record to stream)",
                        elem_id="vigil-camera",
                        webcam_options=gr.WebcamOptions(mirror=False),
                        height=300,
                    )
                with gr.Tab("Video file or stream"):
                    upload = gr.File(label="Video file", file_types=["video"], type="filepath", elem_id="vigil-upload")
                    url = gr.Textbox(
                        label="…or stream URL", placeholder="rtsp://camera.local/stream", elem_id="vigil-url"
                    )
                    with gr.Row():
                        play = gr.Button("Play as live", variant="primary", elem_id="vigil-play")
                        stop = gr.Button("Stop", elem_id="vigil-stop")
                with gr.Accordion("Settings (apply restarts the session)", open=False, elem_id="vigil-settings"):
                    fps = gr.Number(defaults.fps, label="Frames per second", elem_id="vigil-fps")
                    threshold = gr.Number(
                        defaults.drop_threshold,
                        label=f"Drop threshold ({config.perception.drop.mode} mode; empty = default)",
                        elem_id="vigil-threshold",
                    )
                    budget = gr.Number(
                        defaults.budget_tokens, label="Memory budget (tokens)", precision=0, elem_id="vigil-budget"
                    )
                    proactive = gr.Radio(
                        list(PROACTIVE_MODES),
                        value=defaults.proactive,
                        label="Proactive messages",
                        elem_id="vigil-proactive",
                    )
                    instructions = gr.Textbox(
                        label="Standing instructions (one per line)", lines=2, elem_id="vigil-instructions"
                    )
                    apply = gr.Button("Apply & restart", elem_id="vigil-apply")
                    settings_note = gr.HTML("", elem_id="vigil-settings-note", **slot)
                with gr.Row():
                    instruction = gr.Textbox(
                        label="Add a standing instruction now",
                        placeholder="tell me when a person enters",
                        scale=4,
                        elem_id="vigil-instruction",
                    )
                    add = gr.Button("Watch for it", scale=1, elem_id="vigil-add-instruction")
            with gr.Column(scale=6):
                chatbot = gr.Chatbot(label="Chat", height=430, elem_id="vigil-chat", autoscroll=True)
                with gr.Row():
                    question = gr.Textbox(
                        show_label=False,
                        placeholder="Ask about the video at any time…",
                        scale=5,
                        elem_id="vigil-question",
                    )
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="vigil-ask")
        with gr.Row():
            drop_plot = gr.LinePlot(
                figures(UiSession("", None))[0],
                x="t",
                y="drop_ratio",
                y_lim=[0, 1],
                title="Token drop ratio per step",
                x_title="stream time (s)",
                y_title="dropped share",
                height=220,
                elem_id="vigil-drop-plot",
            )
            memory_plot = gr.LinePlot(
                figures(UiSession("", None))[1],
                x="t",
                y="tokens",
                title="Memory tokens",
                x_title="stream time (s)",
                y_title="tokens",
                height=220,
                elem_id="vigil-memory-plot",
            )
            latency_plot = gr.ScatterPlot(  # points: one answer is already visible
                None,
                x="t",
                y="seconds",
                color="metric",
                title="Answer latency",
                x_title="stream time (s)",
                y_title="seconds",
                height=220,
                elem_id="vigil-latency-plot",
            )
        numbers = gr.Markdown("", elem_id="vigil-stats")

        poll = gr.Timer(POLL_EVERY_S)
        figure_timer = gr.Timer(FIGURES_EVERY_S)
        quiet: dict[str, Any] = {"concurrency_limit": None, "show_progress": "hidden", "api_visibility": "private"}
        demo.load(on_load, None, [state, chatbot, status], **quiet)
        demo.load(None, js=CAMERA_JS)
        demo.unload(on_unload)
        camera.stream(on_camera, [camera, state], None, stream_every=CAMERA_EVERY_S, **quiet)
        private = {"concurrency_limit": None, "api_visibility": "private"}
        question.submit(on_ask, [question, state], [chatbot, question, status], show_progress="minimal", **private)
        send.click(on_ask, [question, state], [chatbot, question, status], show_progress="minimal", **private)
        poll.tick(on_poll, [state], [chatbot, status], **quiet)
        figure_timer.tick(on_figures, [state], [drop_plot, memory_plot, latency_plot, numbers], **quiet)
        settings_in = [fps, threshold, budget, proactive, instructions, state]
        apply.click(on_apply, settings_in, [state, chatbot, status, settings_note], **private)
        add.click(on_instruction, [instruction, state], [chatbot, instruction], **private)
        instruction.submit(on_instruction, [instruction, state], [chatbot, instruction], **private)
        play.click(on_play, [upload, url, state], [chatbot, status], **private)
        stop.click(on_stop, [state], [chatbot, status], **private)

        with gr.Column(visible=False):  # inputs and outputs of the plain endpoints
            a_session = gr.Textbox(label="session_id")
            a_fps = gr.Number(label="fps")
            a_threshold = gr.Number(label="drop_threshold")
            a_budget = gr.Number(label="budget_tokens")
            a_proactive = gr.Textbox(label="proactive")
            a_instructions = gr.Textbox(label="instructions")
            a_frame = gr.File(label="frame", type="filepath")
            a_time = gr.Number(label="t")
            a_text = gr.Textbox(label="text")
            a_after = gr.Number(label="after")
            a_video = gr.File(label="video", type="filepath")
            a_url = gr.Textbox(label="url")
            a_out = gr.JSON(label="result")
            endpoint = gr.Button("api")
        plain: dict[str, Any] = {"concurrency_limit": None, "show_progress": "hidden"}
        endpoint.click(
            api_start,
            [a_fps, a_threshold, a_budget, a_proactive, a_instructions],
            a_out,
            api_name="start_session",
            **plain,
        )
        endpoint.click(api_push, [a_session, a_frame, a_time], a_out, api_name="push_frame", **plain)
        endpoint.click(api_ask, [a_session, a_text], a_out, api_name="ask", **plain)
        endpoint.click(api_events, [a_session, a_after], a_out, api_name="events", **plain)
        endpoint.click(api_stats, [a_session], a_out, api_name="stats", **plain)
        endpoint.click(api_instruction, [a_session, a_text], a_out, api_name="add_instruction", **plain)
        endpoint.click(api_play, [a_session, a_video, a_url], a_out, api_name="play", **plain)
        endpoint.click(api_stop, [a_session], a_out, api_name="stop", **plain)
        endpoint.click(api_end, [a_session], a_out, api_name="end_session", **plain)

    demo.vigil_sessions = registry
    return demo


def sessions_of(demo: gr.Blocks) -> SessionRegistry:
    """The session registry of an app built by ``build_app`` (to close its sessions on shutdown)."""
    return demo.vigil_sessions


def mount(app: Any, service: Any, config: VigilConfig, keys: Any) -> None:
    """Mount the app at ``/ui`` of the API server (the ``vigil.ui`` entry point); API keys are its passwords."""
    auth = keys.check_password if keys.enabled else None
    demo = build_app(service.orchestrator, config, model_name=config.model.name)
    gr.mount_gradio_app(app, demo, path="/ui", auth=auth)


def run_demo(config: VigilConfig, host: str, port: int) -> int:
    """Load the model, start the engine and serve the app until interrupted (the ``vigil demo`` command)."""
    import uvicorn
    from fastapi import FastAPI

    from serving.runtime import Runtime

    runtime = Runtime.load(config)
    adapter, orchestrator = runtime.adapter, runtime.orchestrator
    # playing stream URLs makes the server fetch them: only for a local app, unless the config allows some
    allow = None if config.server.video_allow or not _is_loopback(host) else STREAM_URL_SCHEMES
    demo = build_app(orchestrator, config, model_name=adapter.name, allow_urls=allow)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            registry = sessions_of(demo)
            open_sessions = len(registry.sessions)
            await registry.close_all()
            await orchestrator.shutdown()
            print(f"vigil: stopped ({open_sessions} open session(s) closed)", file=sys.stderr, flush=True)

    app = FastAPI(lifespan=lifespan)
    gr.mount_gradio_app(app, demo, path="", footer_links=["api"])
    mounted = app.routes[-1].app  # the gradio app: its stop event ends the tabs' heartbeat streams

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            stop = getattr(mounted, "stop_event", None)
            if stop is not None:
                stop.set()
            super().handle_exit(sig, frame)
            # a signal is how this command is meant to stop: exit normally once shut down, do not re-raise it
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    print(f"vigil: the live-video chat app is at http://{host}:{port}/", file=sys.stderr, flush=True)
    Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)).run()
    return 0
