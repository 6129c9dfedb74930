""" "Where Vigil looks": a frame with the tokens its step kept lit and the dropped ones dimmed."""

from __future__ import annotations

import numpy as np

KEPT_TINT = np.array([255, 170, 0], dtype=np.float32)
"""Orange: the colour kept tokens are tinted and outlined with."""
DIMMED = 0.3
"""Brightness left to dropped tokens."""
DISPLAY_WIDTH = 384


def kept_overlay(frame: np.ndarray, grid: tuple[int, int], kept: np.ndarray) -> np.ndarray:
    """``frame`` [H, W, 3] uint8 with the token grid (rows, cols) drawn over it: the ``kept`` tokens (row-major
    indices) tinted and outlined, the others dimmed. Returns [h, w, 3] uint8 at display size."""
    from PIL import Image

    rows, cols = grid
    height = max(rows, round(DISPLAY_WIDTH * frame.shape[0] / frame.shape[1]))
    # resized so every token is a whole number of pixels: [rows * ch, cols * cw, 3]
    ch, cw = max(1, height // rows), max(1, DISPLAY_WIDTH // cols)
    image = np.asarray(Image.fromarray(frame).resize((cols * cw, rows * ch)), dtype=np.float32)
    mask = np.zeros(rows * cols, dtype=bool)
    mask[np.asarray(kept, dtype=np.int64)] = True
    cells = mask.reshape(rows, cols)  # [rows, cols]
    pixels = np.repeat(np.repeat(cells, ch, axis=0), cw, axis=1)  # [rows * ch, cols * cw]
    out = np.where(pixels[..., None], 0.75 * image + 0.25 * KEPT_TINT, DIMMED * image)
    edge = np.zeros_like(pixels)  # the outline of each kept token
    edge[::ch, :] = edge[ch - 1 :: ch, :] = True
    edge[:, ::cw] = edge[:, cw - 1 :: cw] = True
    out[edge & pixels] = KEPT_TINT
    return out.clip(0, 255).astype(np.uint8)


def drop_line(kept: int, tokens: int, t: float) -> str:
    """The line beside the overlay: how much of the step was dropped."""
    dropped = 1.0 - kept / tokens if tokens else 0.0
    return f"Step at {t:.1f} s: kept {kept} of {tokens} tokens · drop ratio **{dropped:.0%}**"
