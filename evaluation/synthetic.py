"""Synthetic test videos with known ground truth: scenes separated by hard cuts, a moving object in each."""

from __future__ import annotations

import os
from dataclasses import dataclass

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
