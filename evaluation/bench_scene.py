"""Scene-change triggers against hard cuts: the decision module at its defaults and at other steps, with
PySceneDetect's detectors run on the same sampled frames as a yardstick.

Real clips are spliced into one video (each resized to a common size), so every junction is a hard cut; the
clips' own cuts are measured from the decoded frames at the video's full rate (an isolated spike of the pixel or
the colour difference; steady fast motion is not a cut). Cuts closer than ``MERGE_S`` count as one change (no
tolerance window can tell them apart). The decision module's detector runs causally over the sampled frames and
perception steps, and is scored with precision / recall / F1 within a tolerance and false alarms per minute.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import PerceptionConfig, SceneConfig
from assistant.decision import SceneChangeDetector
from assistant.perception import Perception, colour_histogram
from assistant.sources import VideoFileSource
from evaluation.proactive import score_triggers

TOLERANCES = (0.5, 1.0, 2.0)
MERGE_S = 1.0
"""Cuts closer than this are one scene change."""
GRID = ((1.0, 2), (1.0, 1), (2.0, 2), (2.0, 1), (4.0, 2), (4.0, 1))
"""(fps, frames per step) the bench runs; the first is the default configuration."""


def splice_clips(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    size: tuple[int, int] = (320, 240),
    fps: int = 10,
    repeat: int = 1,
) -> float:
    """Write the clips one after another (``repeat`` rounds) at ``fps`` and ``size``; returns the duration."""
    import av
    from PIL import Image

    n = 0
    with av.open(str(out), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for _ in range(repeat):
            for path in paths:
                for frame in VideoFileSource(path, fps=fps):
                    image = np.asarray(Image.fromarray(frame.image).resize(size, Image.BILINEAR))
                    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                        container.mux(packet)
                    n += 1
        for packet in stream.encode():
            container.mux(packet)
    return n / fps


def _isolated_spikes(values: list[float], floor: float, ratio: float, window: int = 5) -> list[int]:
    """Indices whose value is at least ``floor``, ``ratio`` times the median of ``window`` values either side and
    1.5 times both direct neighbours."""
    out = []
    for i, v in enumerate(values):
        around = values[max(0, i - window) : i] + values[i + 1 : i + 1 + window]
        direct = values[max(0, i - 1) : i] + values[i + 1 : i + 2]
        if around and v >= floor and v >= ratio * max(float(np.median(around)), 1e-3) and v >= 1.5 * max(direct):
            out.append(i)
    return out


def measure_cuts(
    path: str | os.PathLike, ratio: float = 3.0, floor: float = 20.0, colour_ratio: float = 2.5
) -> list[float]:
    """Times of hard cuts at the video's full rate: an isolated spike of the mean absolute pixel difference
    (at least ``floor`` of 255 and ``ratio`` times its surroundings) or of the colour-histogram change (at least
    0.2 and ``colour_ratio`` times its surroundings). Cuts closer than ``MERGE_S`` are one."""
    previous, previous_hist, times, pixel, colour = None, None, [], [], []
    for frame in VideoFileSource(path):
        image, hist = frame.image.astype(np.int16), colour_histogram(frame.image)
        if previous is not None:
            pixel.append(float(np.abs(image - previous).mean()))
            colour.append(0.5 * float(np.abs(hist - previous_hist).sum()))
            times.append(frame.t)
        previous, previous_hist = image, hist
    found = set(_isolated_spikes(pixel, floor, ratio)) | set(_isolated_spikes(colour, 0.2, colour_ratio))
    return merge_close([times[i] for i in sorted(found)])


def merge_close(times: Sequence[float], gap: float = MERGE_S) -> list[float]:
    """Keep the first of every run of times closer than ``gap``."""
    out: list[float] = []
    for t in sorted(times):
        if not out or t - out[-1] >= gap:
            out.append(t)
    return out


@dataclass(frozen=True, slots=True)
class SceneBenchResult:
    """One setting: what fired and how it scores (and the yardsticks on the same frames)."""

    video: str
    duration_s: float
    fps: float
    frames_per_step: int
    cut_times: list[float]
    cuts_measured: bool
    """The cut times were measured from the frames (not given)."""
    trigger_times: list[float]
    scores: list[dict[str, Any]]
    yardsticks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """PySceneDetect detectors on the same sampled frames, scored the same way (empty without scenedetect)."""


class _Yardsticks:
    """PySceneDetect's ContentDetector (causal) and AdaptiveDetector (looks two frames ahead) fed frame by frame."""

    def __init__(self, fps: float, min_scene_s: float) -> None:
        from scenedetect.detectors import AdaptiveDetector, ContentDetector

        min_len = max(1, round(min_scene_s * fps))
        self.fps = fps
        self.detectors = {"content": ContentDetector(min_scene_len=min_len), "adaptive": AdaptiveDetector(min_len)}
        self.cuts: dict[str, list[float]] = {name: [] for name in self.detectors}
        self.times: list[float] = []

    def push(self, image: np.ndarray, t: float) -> None:
        from scenedetect import FrameTimecode

        code = FrameTimecode(len(self.times), fps=self.fps)
        self.times.append(t)
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        for name, detector in self.detectors.items():
            self.cuts[name] += [self.times[int(c.frame_num)] for c in detector.process_frame(code, bgr)]

    def finish(self) -> dict[str, list[float]]:
        from scenedetect import FrameTimecode

        if self.times:
            code = FrameTimecode(len(self.times) - 1, fps=self.fps)
            for name, detector in self.detectors.items():
                self.cuts[name] += [self.times[int(c.frame_num)] for c in detector.post_process(code)]
        return self.cuts


def _yardsticks(fps: float, config: SceneConfig) -> _Yardsticks | None:
    try:
        return _Yardsticks(fps, config.cooldown_s)
    except ImportError:  # scenedetect (and opencv) are bench extras
        return None


def run_scene_bench(
    video: str | os.PathLike,
    fps: float = 1.0,
    frames_per_step: int = 2,
    cut_times: Sequence[float] | None = None,
    scene: SceneConfig | None = None,
) -> SceneBenchResult:
    """Perception (pixel drop, no model) + the scene-change detector over a video, scored against its cuts."""
    cuts = list(cut_times) if cut_times is not None else measure_cuts(video)
    scene = scene or SceneConfig()
    source = VideoFileSource(video, fps=fps)
    perception = Perception(PerceptionConfig(fps=fps, frames_per_step=frames_per_step, drop={"mode": "pixel"}))
    detector = SceneChangeDetector(scene)
    yardsticks = _yardsticks(fps, scene)
    fired, last_t = [], 0.0
    for frame in source:
        update = perception.push(frame)
        signal = perception.frame_signal
        if (trig := detector.frame(signal.t, signal.colour_change)) is not None:
            fired.append(trig.t)
        if update is not None and (trig := detector.step(update)) is not None:
            fired.append(trig.t)
        if yardsticks is not None:
            yardsticks.push(frame.image, frame.t)
        last_t = frame.t
    duration = source.duration or (perception.stats.frames / fps)
    cuts = [c for c in cuts if c <= last_t + 1e-6]  # a cut after the last sampled frame cannot be seen

    def score(times: list[float]) -> list[dict[str, Any]]:
        return [asdict(score_triggers(sorted(times), cuts, tol, duration)) for tol in TOLERANCES]

    sticks = {name: score(times) for name, times in yardsticks.finish().items()} if yardsticks else {}
    return SceneBenchResult(
        str(video), duration, fps, frames_per_step, cuts, cut_times is None, sorted(fired), score(fired), sticks
    )


def run_scene_grid(
    video: str | os.PathLike,
    settings: Sequence[tuple[float, int]] = GRID,
    cut_times: Sequence[float] | None = None,
) -> list[SceneBenchResult]:
    """``run_scene_bench`` for every (fps, frames per step), the cuts measured once."""
    cuts = list(cut_times) if cut_times is not None else measure_cuts(video)
    measured = cut_times is None
    return [replace(run_scene_bench(video, fps, n, cuts), cuts_measured=measured) for fps, n in settings]


def _cell(scores: list[dict[str, Any]], tolerance: float) -> str:
    s = next(s for s in scores if s["tolerance_s"] == tolerance)
    return f"{s['f1']:.2f} / {s['false_alarms_per_min']:.1f}"


def format_scene_grid(results: Sequence[SceneBenchResult], tolerance: float = 1.0) -> str:
    """One row per setting (the first is the default): F1 / false alarms per minute at ``tolerance``."""
    first = results[0]
    sticks = list(first.yardsticks)
    lines = [
        f"{Path(first.video).name}: {first.duration_s:.1f} s, {len(first.cut_times)} scene changes "
        f"{'measured from the frames' if first.cuts_measured else 'given'}; F1 / false alarms per minute "
        f"within ±{tolerance:g} s",
        "",
        "| fps | frames per step | Vigil | precision | recall | mean abs time diff (s) | "
        + " | ".join(f"PySceneDetect {name}" for name in sticks)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(sticks),
    ]
    for i, r in enumerate(results):
        s = next(s for s in r.scores if s["tolerance_s"] == tolerance)
        diff = "-" if s["mean_abs_time_diff_s"] is None else f"{s['mean_abs_time_diff_s']:.2f}"
        label = f"{r.frames_per_step}" + (" (default)" if i == 0 else "")
        lines.append(
            f"| {r.fps:g} | {label} | {_cell(r.scores, tolerance)} | {s['precision']:.2f} | {s['recall']:.2f} "
            f"| {diff} | " + " | ".join(_cell(r.yardsticks[name], tolerance) for name in sticks) + " |"
        )
    return "\n".join(lines)


def format_scene_table(result: SceneBenchResult) -> str:
    """Every tolerance of one setting."""
    lines = [
        f"{Path(result.video).name}: {result.duration_s:.1f} s, {len(result.cut_times)} scene changes "
        f"{'measured from the frames' if result.cuts_measured else 'given'}; sampled at {result.fps:g} fps, "
        f"{result.frames_per_step} frame(s) per step",
        "",
        "| tolerance | precision | recall | F1 | mean abs time diff (s) | false alarms / min |",
        "|---|---|---|---|---|---|",
    ]
    for s in result.scores:
        diff = "-" if s["mean_abs_time_diff_s"] is None else f"{s['mean_abs_time_diff_s']:.2f}"
        lines.append(
            f"| ±{s['tolerance_s']:g} s | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} "
            f"| {diff} | {s['false_alarms_per_min']:.2f} |"
        )
    return "\n".join(lines)
