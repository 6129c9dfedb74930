"""The page's components, part by part (built inside a ``gr.Blocks``; no handlers here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from assistant.config import VigilConfig
from demos.settings import PROACTIVE_MODES, SessionSettings
from demos.transcript import Transcript
from demos.views import clock_html, figures, model_banner

SLOT: dict[str, Any] = {"container": False, "padding": False, "min_height": 0}
"""An HTML slot that takes no room while empty."""


@dataclass(frozen=True, slots=True)
class Sources:
    """Where frames come from: the webcam, or a file or stream URL played as live."""

    camera: gr.Image
    upload: gr.File
    url: gr.Textbox
    play: gr.Button
    stop: gr.Button
    watched: gr.Video
    """The uploaded file being watched, played in step with the stream clock."""


@dataclass(frozen=True, slots=True)
class SettingsForm:
    """The per-tab settings (applying restarts the session) and the standing-instruction box."""

    fps: gr.Number
    threshold: gr.Textbox
    budget: gr.Number
    proactive: gr.Radio
    instructions: gr.Textbox
    frames_per_step: gr.Dropdown
    apply: gr.Button
    note: gr.HTML
    instruction: gr.Textbox
    add: gr.Button

    @property
    def values(self) -> list[Any]:
        """The inputs of an apply, in ``make_settings`` order."""
        return [self.fps, self.threshold, self.budget, self.proactive, self.instructions, self.frames_per_step]


@dataclass(frozen=True, slots=True)
class Looking:
    """ "Where Vigil looks": the newest step's kept tokens over its frame, its drop ratio, and the file's clock."""

    image: gr.Image
    caption: gr.Markdown
    clock: gr.HTML

    @property
    def outputs(self) -> list[Any]:
        """The components a redraw updates, in order."""
        return [self.image, self.caption, self.clock]


@dataclass(frozen=True, slots=True)
class Chat:
    """The chat and the question box."""

    chatbot: gr.Chatbot
    question: gr.Textbox
    send: gr.Button


@dataclass(frozen=True, slots=True)
class Panel:
    """The live figures and the numbers line."""

    drops: gr.LinePlot
    memory: gr.LinePlot
    latency: gr.ScatterPlot
    numbers: gr.Markdown

    @property
    def outputs(self) -> list[Any]:
        """The components a redraw of the panel updates, in order."""
        return [self.drops, self.memory, self.latency, self.numbers]


@dataclass(frozen=True, slots=True)
class Page:
    """Every component the handlers read or write."""

    state: gr.State
    status: gr.HTML
    sources: Sources
    settings: SettingsForm
    chat: Chat
    panel: Panel
    looking: Looking


def build_page(
    config: VigilConfig, defaults: SessionSettings, model_name: str | None, command: str = "vigil demo"
) -> Page:
    """The visible page: banners, sources and settings on the left, the chat on the right, the panel below."""
    state = gr.State(None)
    gr.Markdown(
        "## Vigil — live video chat\nA video model watches the stream, speaks up on its own, and answers any time."
    )
    gr.HTML(model_banner(model_name, command), elem_id="vigil-model-slot", **SLOT)
    status = gr.HTML("", elem_id="vigil-status-slot", **SLOT)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            sources = _sources()
            looking = _looking()
            settings = _settings(config, defaults)
        with gr.Column(scale=6):
            chat = _chat()
    panel = _panel()
    return Page(state, status, sources, settings, chat, panel, looking)


def _sources() -> Sources:
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
        url = gr.Textbox(label="…or stream URL", placeholder="rtsp://camera.local/stream", elem_id="vigil-url")
        with gr.Row():
            play = gr.Button("Play as live", variant="primary", elem_id="vigil-play")
            stop = gr.Button("Stop", elem_id="vigil-stop")
        watched = gr.Video(
            label="Being watched (in step with the stream)",
            interactive=False,
            autoplay=True,
            loop=False,
            height=240,
            elem_id="vigil-watched",
        )
    return Sources(camera, upload, url, play, stop, watched)


def _looking() -> Looking:
    image = gr.Image(
        None,
        label="Where Vigil looks: the tokens the newest step kept (lit) and dropped (dimmed)",
        interactive=False,
        type="numpy",
        height=240,
        elem_id="vigil-looks",
    )
    caption = gr.Markdown("", elem_id="vigil-looks-caption")
    clock = gr.HTML(clock_html(None), elem_id="vigil-clock-slot", **SLOT)
    return Looking(image, caption, clock)


def _settings(config: VigilConfig, defaults: SessionSettings) -> SettingsForm:
    with gr.Accordion("Settings (apply restarts the session)", open=False, elem_id="vigil-settings"):
        fps = gr.Number(defaults.fps, label="Frames per second", elem_id="vigil-fps")
        threshold = gr.Textbox(
            "" if defaults.drop_threshold is None else f"{defaults.drop_threshold:g}",
            label=f"Drop threshold ({config.perception.drop.mode} mode; empty = the mode's default)",
            placeholder="default",
            elem_id="vigil-threshold",
        )
        frames_per_step = gr.Dropdown(
            ["default", "1", "2"],
            value="default" if defaults.frames_per_step is None else str(defaults.frames_per_step),
            label="Frames per step (default: the model's temporal patch; 1 = finer timing, twice the tokens)",
            elem_id="vigil-frames-per-step",
        )
        budget = gr.Number(defaults.budget_tokens, label="Memory budget (tokens)", precision=0, elem_id="vigil-budget")
        proactive = gr.Radio(
            list(PROACTIVE_MODES), value=defaults.proactive, label="Proactive messages", elem_id="vigil-proactive"
        )
        instructions = gr.Textbox(label="Standing instructions (one per line)", lines=2, elem_id="vigil-instructions")
        apply = gr.Button("Apply & restart", elem_id="vigil-apply")
        note = gr.HTML("", elem_id="vigil-settings-note", **SLOT)
    with gr.Row():
        instruction = gr.Textbox(
            label="Add a standing instruction now",
            placeholder="tell me when a person enters",
            scale=4,
            elem_id="vigil-instruction",
        )
        add = gr.Button("Watch for it", scale=1, elem_id="vigil-add-instruction")
    return SettingsForm(fps, threshold, budget, proactive, instructions, frames_per_step, apply, note, instruction, add)


def _chat() -> Chat:
    chatbot = gr.Chatbot(label="Chat", height=430, elem_id="vigil-chat", autoscroll=True)
    with gr.Row():
        question = gr.Textbox(
            show_label=False, placeholder="Ask about the video at any time…", scale=5, elem_id="vigil-question"
        )
        send = gr.Button("Ask", variant="primary", scale=1, elem_id="vigil-ask")
    return Chat(chatbot, question, send)


def _panel() -> Panel:
    empty_drops, empty_memory, _ = figures(Transcript())
    axes: dict[str, Any] = {"x": "t", "x_title": "stream time (s)", "height": 220}
    with gr.Row():
        drops = gr.LinePlot(
            empty_drops,
            y="drop_ratio",
            y_lim=[0, 1],
            title="Token drop ratio per step",
            y_title="dropped share",
            elem_id="vigil-drop-plot",
            **axes,
        )
        memory = gr.LinePlot(
            empty_memory, y="tokens", title="Memory tokens", y_title="tokens", elem_id="vigil-memory-plot", **axes
        )
        latency = gr.ScatterPlot(  # points: one answer is already visible
            None,
            y="seconds",
            color="metric",
            title="Answer latency",
            y_title="seconds",
            elem_id="vigil-latency-plot",
            **axes,
        )
    numbers = gr.Markdown("", elem_id="vigil-stats")
    return Panel(drops, memory, latency, numbers)
