"""Synthetic test videos with known ground truth: scenes separated by hard cuts, a moving object in each."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class SyntheticClip:
    """What was written: the file and the exact stream times of its hard cuts."""

    path: str
    seconds: float
    fps: int
    width: int
    height: int
    cut_times: tuple[float, ...]


def scene_frame(scene: int, t: float, width: int, height: int) -> np.ndarray:
    """Frame [H, W, 3] uint8 of ``scene`` at time ``t``: a scene-specific backdrop and a square moving across it."""
    rng = np.random.default_rng(1000 + scene)
    base = rng.integers(30, 225, size=3)
    yy, xx = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)[..., None]  # [H, W, 1]
    stripes = ((xx // (16 + 8 * (scene % 4))) % 2)[..., None] * 25
    frame = np.clip(base[None, None, :] * (0.6 + 0.4 * ramp) + stripes, 0, 255).astype(np.uint8)
    side = max(8, min(width, height) // 5)
    speed = width / 8.0  # pixels per second
    x0 = int((t * speed) % max(1, width - side))
    y0 = int((height - side) * (0.3 + 0.4 * (scene % 2)))
    frame[y0 : y0 + side, x0 : x0 + side] = 255 - base.astype(np.uint8)
    return frame


def write_clip(
    path: str | os.PathLike,
    seconds: float = 20.0,
    fps: int = 10,
    width: int = 320,
    height: int = 240,
    cut_times: tuple[float, ...] = (6.0, 13.0),
) -> SyntheticClip:
    """Write an h264 mp4 whose scene changes exactly at ``cut_times`` (rounded to frame times)."""
    import av

    if seconds <= 0 or fps <= 0 or width < 16 or height < 16:
        raise ValueError("seconds and fps must be positive and the frame at least 16x16")
    width, height = width - width % 2, height - height % 2
    n = round(seconds * fps)
    cuts = tuple(sorted(round(c * fps) / fps for c in cut_times if 0 < c < seconds))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": str(fps)}
        for i in range(n):
            t = i / fps
            scene = sum(1 for c in cuts if t >= c - 1e-9)
            frame = av.VideoFrame.from_ndarray(scene_frame(scene, t, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return SyntheticClip(str(path), n / fps, fps, width, height, cuts)


@dataclass(frozen=True, slots=True)
class WrittenVideos:
    """How many files ``write_ovo_videos`` wrote."""

    sources: int
    clips: int


def clip_frames(end: float, fps: int) -> int:
    """Frames of a clip from 0 to ``end`` s: those before ``end`` (at least one, as a clip cut at 0.03 s has)."""
    return max(1, math.ceil(end * fps - 1e-9))


def write_ovo_videos(
    items: Sequence[Any],
    root: str | os.PathLike,
    *,
    layout: str = "both",
    fps: int = 5,
    width: int = 160,
    height: int = 120,
    cut_every: float = 7.0,
) -> WrittenVideos:
    """Generated videos for OVO-Bench items in the benchmark's layouts (``source``, ``chunked`` or ``both``).

    ``src_videos/{video}`` runs one second past the video's latest query; ``chunked_videos/{id}.mp4`` and
    ``chunked_videos/{id}_{k}.mp4`` are its prefixes up to each query's and each poll's ``realtime`` (the same
    frames, as the benchmark cuts its clips from the source).
    """
    from pathlib import Path

    if layout not in ("source", "chunked", "both"):
        raise ValueError(f"layout must be source, chunked or both, got {layout!r}")
    if cut_every <= 0:
        raise ValueError(f"cut_every must be positive, got {cut_every}")
    out = Path(root)
    ends: dict[str, list[tuple[str, float]]] = {}
    for item in items:
        polls = getattr(item, "polls", None)
        if polls is None:
            ends.setdefault(item.video, []).append((f"{item.id}.mp4", item.realtime))
        else:
            ends.setdefault(item.video, []).extend((f"{item.id}_{k}.mp4", p.realtime) for k, p in enumerate(polls))
    sources = clips = 0
    for video, clip_ends in ends.items():
        seconds = math.ceil(max(t for _, t in clip_ends)) + 1.0
        cuts = tuple(cut_every * i for i in range(1, int(seconds / cut_every) + 1))
        if layout in ("source", "both"):
            target = out / "src_videos" / video
            target.parent.mkdir(parents=True, exist_ok=True)
            write_clip(target, seconds=seconds, fps=fps, width=width, height=height, cut_times=cuts)
            sources += 1
        if layout in ("chunked", "both"):
            (out / "chunked_videos").mkdir(parents=True, exist_ok=True)
            for name, end in clip_ends:
                n = clip_frames(end, fps)
                write_clip(
                    out / "chunked_videos" / name, seconds=n / fps, fps=fps, width=width, height=height, cut_times=cuts
                )
                clips += 1
    return WrittenVideos(sources, clips)
