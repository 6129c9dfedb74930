"""The page's handlers, wired part by part: the tab's session, the chat, the settings, playback and the timers.

Handlers are coroutines on the server's loop; they raise gr.Error (shown on the page) for a bad request and
never harm the session.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr
import numpy as np

from demos.assets import camera_js
from demos.context import ANSWER_TIMEOUT_S, AppContext, shown_as_gradio_error
from demos.errors import SessionRefused, UiError
from demos.layout import Page
from demos.settings import make_settings
from demos.views import BANNER_STYLE, banner, clock_html, figures, stats_markdown, status_banner

log = logging.getLogger(__name__)

POLL_EVERY_S = 0.5
"""How often a tab pulls new events (proactive messages appear within this)."""
FIGURES_EVERY_S = 1.0
CAMERA_EVERY_S = 0.2
"""Webcam frames reach the server at most this often (5 per second; the session's fps thins them further)."""
QUIET: dict[str, Any] = {"concurrency_limit": None, "show_progress": "hidden", "api_visibility": "private"}
PRIVATE: dict[str, Any] = {"concurrency_limit": None, "api_visibility": "private"}


def wire_page(demo: gr.Blocks, ctx: AppContext, page: Page) -> None:
    """Connect every part of the page to its handlers."""
    wire_session(demo, ctx, page)
    wire_chat(ctx, page)
    wire_settings(ctx, page)
    wire_playback(ctx, page)
    wire_timers(ctx, page)


def wire_session(demo: gr.Blocks, ctx: AppContext, page: Page) -> None:
    """A session per tab: opened on load, closed on unload, fed by the webcam."""

    async def on_load(request: gr.Request) -> tuple[Any, ...]:
        defaults = ctx.defaults
        settings, _ = make_settings(
            ctx.config, defaults.fps, defaults.drop_threshold, defaults.budget_tokens, defaults.proactive
        )
        try:
            ui = await ctx.open(settings, request)
        except SessionRefused as exc:
            return None, [], status_banner(None, f"No session: {exc}. Reload the page to try again.")
        except UiError as exc:
            return None, [], status_banner(None, f"Engine unavailable: {exc}. Reload the page to try again.")
        ui.sync()
        ui.sent_version = ui.version
        return ui.ui_id, ui.chat(), status_banner(ui)

    async def on_unload(request: gr.Request) -> None:
        if request is not None and request.session_hash:
            await ctx.registry.close_tab(request.session_hash, "tab closed")

    async def on_camera(frame: np.ndarray | None, ui_id: str | None) -> None:
        ui = ctx.registry.sessions.get(ui_id or "")
        if frame is None or ui is None or ui.live is None or ui.live.closed:
            return
        try:
            await ui.push(frame, camera=True)
        except UiError as exc:  # a broken camera frame fails alone
            log.debug("camera frame rejected: %s", exc)

    page_io = [page.state, page.chat.chatbot, page.status]
    demo.load(on_load, None, page_io, **QUIET)
    demo.load(None, js=camera_js(BANNER_STYLE["error"]))
    demo.unload(on_unload)
    camera = page.sources.camera
    camera.stream(on_camera, [camera, page.state], None, stream_every=CAMERA_EVERY_S, **QUIET)


def wire_chat(ctx: AppContext, page: Page) -> None:
    """Questions, answered into the chat token by token."""

    async def on_ask(question: str, ui_id: str | None) -> AsyncIterator[tuple[Any, Any, Any]]:
        ui = ctx.lookup(ui_id)
        with shown_as_gradio_error():
            answer_id, done = await ui.ask(question, **ctx.answer_options)
        ui.sent_version = ui.version
        yield ui.chat(), "", gr.skip()
        async for _ in ui.follow_answer(answer_id, done, ANSWER_TIMEOUT_S):
            ui.sent_version = ui.version
            yield ui.chat(), gr.skip(), status_banner(ui)

    chat = page.chat
    outputs = [chat.chatbot, chat.question, page.status]
    for trigger in (chat.question.submit, chat.send.click):
        trigger(on_ask, [chat.question, page.state], outputs, show_progress="minimal", **PRIVATE)


def wire_settings(ctx: AppContext, page: Page) -> None:
    """Apply & restart with new settings; add a standing instruction to the running session."""

    async def on_apply(
        fps: Any,
        threshold: Any,
        budget: Any,
        proactive: str,
        instructions: str,
        frames_per_step: Any,
        ui_id: str | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        try:
            settings, _ = make_settings(ctx.config, fps, threshold, budget, proactive, instructions, frames_per_step)
        except UiError as exc:
            gr.Warning(str(exc))
            return gr.skip(), gr.skip(), gr.skip(), banner("error", str(exc), "vigil-settings-error")
        ui = ctx.registry.sessions.get(ui_id or "")
        try:
            ui = await ctx.open(settings, request) if ui is None else await ctx.registry.restart(ui, settings)
        except UiError as exc:
            return gr.skip(), gr.skip(), status_banner(None, str(exc)), ""
        ui.sent_version = ui.version
        applied = banner("info", f"Applied: {settings.describe()}", "vigil-settings-ok")
        return ui.ui_id, ui.chat(), status_banner(ui), applied

    async def on_instruction(text: str, ui_id: str | None) -> tuple[Any, Any]:
        ui = ctx.lookup(ui_id)
        with shown_as_gradio_error():
            await ui.add_instruction(text)
        ui.sent_version = ui.version
        return ui.chat(), ""

    form = page.settings
    outputs = [page.state, page.chat.chatbot, page.status, form.note]
    form.apply.click(on_apply, [*form.values, page.state], outputs, **PRIVATE)
    for trigger in (form.add.click, form.instruction.submit):
        trigger(on_instruction, [form.instruction, page.state], [page.chat.chatbot, form.instruction], **PRIVATE)


def wire_playback(ctx: AppContext, page: Page) -> None:
    """Play a file or stream into the tab's session as live, and stop it."""

    async def on_play(upload: str | None, url: str | None, ui_id: str | None) -> tuple[Any, ...]:
        ui = ctx.lookup(ui_id)
        with shown_as_gradio_error():
            spec, label = ctx.playable(url, upload)
            shown = spec if spec == upload else None  # an uploaded file plays on the page too; a stream does not
            await ui.play(spec, label, shown=shown)
        ui.sent_version = ui.version
        return ui.chat(), status_banner(ui), gr.Video(value=shown), clock_html(ui.watch_position())

    async def on_stop(ui_id: str | None) -> tuple[Any, ...]:
        ui = ctx.lookup(ui_id)
        await ui.stop_playback()
        ui.sync()
        ui.sent_version = ui.version
        return ui.chat(), status_banner(ui), gr.skip(), clock_html(None)

    sources = page.sources
    outputs = [page.chat.chatbot, page.status, sources.watched, page.looking.clock]
    sources.play.click(on_play, [sources.upload, sources.url, page.state], outputs, **PRIVATE)
    sources.stop.click(on_stop, [page.state], outputs, **PRIVATE)


def wire_timers(ctx: AppContext, page: Page) -> None:
    """Pull new events into the chat twice a second, and redraw the live panel every second."""

    async def on_poll(ui_id: str | None) -> tuple[Any, Any]:
        ui = ctx.registry.sessions.get(ui_id or "")
        if ui is None:
            return gr.skip(), gr.skip()
        await ui.keep_alive()
        ui.sync()
        if ui.version == ui.sent_version:
            return gr.skip(), gr.skip()
        ui.sent_version = ui.version
        return ui.chat(), status_banner(ui)

    async def on_figures(ui_id: str | None) -> tuple[Any, ...]:
        ui = ctx.registry.sessions.get(ui_id or "")
        if ui is None:
            return (gr.skip(),) * (len(page.panel.outputs) + len(page.looking.outputs))
        return (*await panel_update(ui), *looking_update(ui))

    async def panel_update(ui: Any) -> tuple[Any, ...]:
        ui.sync()
        text = stats_markdown(ui.stats())
        if ui.figures_version == ui.sent_figures:
            return gr.skip(), gr.skip(), gr.skip(), text
        ui.sent_figures = ui.figures_version
        drops, memory, latency = figures(ui)
        budget = ui.settings.budget_tokens if ui.settings else ctx.config.memory.budget_tokens
        span = [0.0, max(1.0, ui.live.stream_t if ui.live else 0.0)]  # one time axis for the three plots
        return (
            gr.LinePlot(value=drops, x_lim=span),
            gr.LinePlot(value=memory, x_lim=span, y_lim=[0, budget], title=f"Memory tokens (budget {budget})"),
            # an empty frame with a colour column would leave the chart unable to draw later points
            gr.ScatterPlot(value=latency if len(latency) else None, x_lim=span),
            text,
        )

    def looking_update(ui: Any) -> tuple[Any, ...]:
        looks = ui.looks()
        clock = clock_html(ui.watch_position())
        if looks is None or looks.t == ui.sent_looks:
            return gr.skip(), gr.skip(), clock
        ui.sent_looks = looks.t
        return looks.image, looks.caption, clock

    gr.Timer(POLL_EVERY_S).tick(on_poll, [page.state], [page.chat.chatbot, page.status], **QUIET)
    outputs = [*page.panel.outputs, *page.looking.outputs]
    gr.Timer(FIGURES_EVERY_S).tick(on_figures, [page.state], outputs, **QUIET)
