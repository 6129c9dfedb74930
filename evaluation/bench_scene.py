"""Scene-change triggers against hard cuts measured from the frames themselves.

Real clips are spliced into one video (each resized to a common size), so every junction is a hard cut. The cut
times are then measured from the decoded frames (a spike of the mean absolute frame difference), not assumed.
The decision module's scene-change detector runs causally over perception updates and is scored with
precision / recall / F1 within a tolerance and false alarms per minute.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import PerceptionConfig
from assistant.decision import SceneChangeDetector
from assistant.perception import Perception
from assistant.sources import VideoFileSource
from evaluation.proactive import score_triggers

TOLERANCES = (0.5, 1.0, 2.0)


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


def measure_cuts(path: str | os.PathLike, ratio: float = 3.0, floor: float = 20.0) -> list[float]:
    """Times of hard cuts: frames whose mean absolute difference to the previous frame is an isolated spike
    (at least ``floor`` and ``ratio`` times the differences just before and after; fast motion is not a cut)."""
    previous, times, diffs = None, [], []
    for frame in VideoFileSource(path):
        image = frame.image.astype(np.int16)
        if previous is not None:
            diffs.append(float(np.abs(image - previous).mean()))
            times.append(frame.t)
        previous = image
    cuts = []
    for i, d in enumerate(diffs):
        neighbours = [diffs[j] for j in (i - 1, i + 1) if 0 <= j < len(diffs)]
        if d >= floor and all(d >= ratio * max(n, 1.0) for n in neighbours):
            cuts.append(times[i])
    return cuts


@dataclass(frozen=True, slots=True)
class SceneBenchResult:
    video: str
    duration_s: float
    fps: float
    frames_per_step: int
    cut_times: list[float]
    cuts_measured: bool
    """The cut times were measured from the frames (not given)."""
    trigger_times: list[float]
    scores: list[dict[str, Any]]


def run_scene_bench(
    video: str | os.PathLike, fps: float = 4.0, frames_per_step: int = 1, cut_times: Sequence[float] | None = None
) -> SceneBenchResult:
    """Perception (pixel drop, no model) + scene-change detector over a video, scored against its cuts."""
    cuts = list(cut_times) if cut_times is not None else measure_cuts(video)
    source = VideoFileSource(video, fps=fps)
    perception = Perception(PerceptionConfig(fps=fps, frames_per_step=frames_per_step, drop={"mode": "pixel"}))
    detector = SceneChangeDetector()
    fired = [trig.t for update in perception.run(source) if (trig := detector.step(update)) is not None]
    duration = source.duration or (perception.stats.frames / fps)
    scores = [asdict(score_triggers(fired, cuts, tol, duration)) for tol in TOLERANCES]
    return SceneBenchResult(str(video), duration, fps, frames_per_step, cuts, cut_times is None, fired, scores)


def format_scene_table(result: SceneBenchResult) -> str:
    lines = [
        f"{Path(result.video).name}: {result.duration_s:.1f} s, {len(result.cut_times)} hard cuts "
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
