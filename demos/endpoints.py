"""The plain (non-streaming) endpoints that scripts and tests call with gradio_client, on the same sessions.

start_session, push_frame, ask, events, stats, add_instruction, play, stop and end_session; each fails alone
with a readable error (``AppError`` in the client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from demos.context import ANSWER_TIMEOUT_S, AppContext, shown_as_gradio_error
from demos.settings import make_settings
from serving.service import ServiceError, VigilService

PLAIN: dict[str, Any] = {"concurrency_limit": None, "show_progress": "hidden"}
EVENTS_PER_PAGE = 1000


@dataclass(frozen=True, slots=True)
class EndpointIO:
    """Hidden components that give the plain endpoints their inputs and output."""

    session: gr.Textbox
    fps: gr.Number
    threshold: gr.Number
    budget: gr.Number
    proactive: gr.Textbox
    instructions: gr.Textbox
    frame: gr.File
    t: gr.Number
    text: gr.Textbox
    after: gr.Number
    video: gr.File
    url: gr.Textbox
    out: gr.JSON
    button: gr.Button


def endpoint_io() -> EndpointIO:
    """The hidden inputs and output of the plain endpoints (built inside the Blocks)."""
    with gr.Column(visible=False):
        return EndpointIO(
            gr.Textbox(label="session_id"),
            gr.Number(label="fps"),
            gr.Number(label="drop_threshold"),
            gr.Number(label="budget_tokens"),
            gr.Textbox(label="proactive"),
            gr.Textbox(label="instructions"),
            gr.File(label="frame", type="filepath"),
            gr.Number(label="t"),
            gr.Textbox(label="text"),
            gr.Number(label="after"),
            gr.File(label="video", type="filepath"),
            gr.Textbox(label="url"),
            gr.JSON(label="result"),
            gr.Button("api"),
        )


def answer_view(answer_id: str, event: Any) -> dict[str, Any]:
    """A finished answer as the ask endpoint returns it."""
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


def wire_sessions(ctx: AppContext, io: EndpointIO) -> None:
    """start_session, stats and end_session."""

    async def start_session(
        fps: Any, drop_threshold: Any, budget_tokens: Any, proactive: str, instructions: str, request: gr.Request
    ) -> dict[str, Any]:
        """Start a session with these settings; returns its stats (whose session_id the others take)."""
        with shown_as_gradio_error():
            settings, _ = make_settings(ctx.config, fps, drop_threshold, budget_tokens, proactive, instructions)
            ui = await ctx.open(settings, request)
        return ui.stats().to_dict()

    async def stats(session_id: str) -> dict[str, Any]:
        """The session's settings, state and live figures."""
        ui = ctx.lookup(session_id)
        ui.sync()
        return ui.stats().to_dict()

    async def end_session(session_id: str) -> dict[str, Any]:
        """End the session; closed is False when there was none."""
        return {"closed": await ctx.registry.close(session_id or "", "ended by client")}

    settings_in = [io.fps, io.threshold, io.budget, io.proactive, io.instructions]
    io.button.click(start_session, settings_in, io.out, api_name="start_session", **PLAIN)
    io.button.click(stats, [io.session], io.out, api_name="stats", **PLAIN)
    io.button.click(end_session, [io.session], io.out, api_name="end_session", **PLAIN)


def wire_stream(ctx: AppContext, io: EndpointIO) -> None:
    """push_frame, ask and events."""

    async def push_frame(session_id: str, frame: str | None, t: Any) -> dict[str, Any]:
        """Queue one JPEG/PNG/WebP frame at stream time t (empty: the session clock)."""
        ui = ctx.lookup(session_id)
        with shown_as_gradio_error():
            status = await ui.push(ctx.read_frame(frame), None if t in (None, "") else t)
        live = ui.live
        return {
            "status": status,
            "accepted": status == "accepted",
            "processed_frames": live.processed_frames,
            "frames_dropped": dict(live.frames_dropped),
        }

    async def ask(session_id: str, question: str) -> dict[str, Any]:
        """Ask about the stream now; returns the whole answer with its latency and token counts."""
        ui = ctx.lookup(session_id)
        with shown_as_gradio_error():
            answer_id, done = await ui.ask(question, **ctx.answer_options)
        async for _ in ui.follow_answer(answer_id, done, ANSWER_TIMEOUT_S):
            pass
        if not done.done():
            raise gr.Error(f"no answer within {ANSWER_TIMEOUT_S:.0f} s")
        try:
            return answer_view(answer_id, await VigilService.wait_answer(done))
        except ServiceError as exc:
            raise gr.Error(exc.message) from None

    async def events(session_id: str, after: Any) -> dict[str, Any]:
        """The session's events after sequence number ``after`` (up to 1000)."""
        ui = ctx.lookup(session_id)
        try:
            cursor = 0.0 if after in (None, "") else float(after)
        except (TypeError, ValueError):
            cursor = -1.0
        if not (cursor >= 0 and cursor == int(cursor)):
            raise gr.Error(f"after must be an event sequence number >= 0, got {after!r}")
        live = ui.live
        page = live.events.since(int(cursor))[:EVENTS_PER_PAGE] if live else []
        return {
            "live_session_id": live.session_id if live else None,
            "events": [e.to_dict() for e in page],
            "last_seq": page[-1].seq if page else int(cursor),
        }

    io.button.click(push_frame, [io.session, io.frame, io.t], io.out, api_name="push_frame", **PLAIN)
    io.button.click(ask, [io.session, io.text], io.out, api_name="ask", **PLAIN)
    io.button.click(events, [io.session, io.after], io.out, api_name="events", **PLAIN)


def wire_controls(ctx: AppContext, io: EndpointIO) -> None:
    """add_instruction, play and stop."""

    async def add_instruction(session_id: str, text: str) -> dict[str, Any]:
        """Watch for a standing instruction from now on."""
        ui = ctx.lookup(session_id)
        with shown_as_gradio_error():
            instruction = await ui.add_instruction(text)
        return {"instruction": instruction, "instructions": list(ui.settings.instructions)}

    async def play(session_id: str, upload: str | None, url: str | None) -> dict[str, Any]:
        """Play an uploaded video file or an allowed stream URL into the session as live."""
        ui = ctx.lookup(session_id)
        with shown_as_gradio_error():
            spec, label = ctx.playable(url, upload)
            await ui.play(spec, label)
        return {"playing": ui.playing}

    async def stop(session_id: str) -> dict[str, Any]:
        """Stop what is playing; stopped is False when nothing was."""
        return {"stopped": await ctx.lookup(session_id).stop_playback()}

    io.button.click(add_instruction, [io.session, io.text], io.out, api_name="add_instruction", **PLAIN)
    io.button.click(play, [io.session, io.video, io.url], io.out, api_name="play", **PLAIN)
    io.button.click(stop, [io.session], io.out, api_name="stop", **PLAIN)


def wire_endpoints(ctx: AppContext) -> None:
    """Build the hidden inputs and register every plain endpoint (inside the Blocks)."""
    io = endpoint_io()
    wire_sessions(ctx, io)
    wire_stream(ctx, io)
    wire_controls(ctx, io)
