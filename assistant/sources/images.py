"""Still images: encoded JPEG/PNG/WebP bytes and arrays to validated [H, W, 3] uint8 RGB, within a pixel limit."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from assistant.sources.frame import InvalidFrameError

DEFAULT_MAX_PIXELS = 4096 * 4096
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
"""Encoded formats ``decode_image`` accepts."""


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes to [H, W, 3] uint8 RGB; InvalidFrameError for anything unusable.

    The size declared in the header is checked against ``max_pixels`` before any pixel is decoded.
    """
    if not data:
        raise InvalidFrameError("empty image data; send JPEG, PNG or WebP bytes")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            _check_pixels(img.width, img.height, max_pixels)
            img.load()
            rgb = np.array(img.convert("RGB"))  # [H, W, 3]
    except InvalidFrameError:
        raise
    except Exception as exc:  # Pillow raises many types for malformed data
        if isinstance(exc, Image.DecompressionBombError):
            raise InvalidFrameError(f"image exceeds the pixel limit: {exc}") from None
        raise InvalidFrameError(
            f"not a decodable {'/'.join(IMAGE_FORMATS)} image ({type(exc).__name__}: {exc})"
        ) from None
    return as_rgb(rgb, max_pixels)


def as_rgb(image: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Validate an array frame and return it as C-contiguous [H, W, 3] uint8 RGB.

    Accepts [H, W, 3] RGB, [H, W, 4] RGBA (alpha dropped) and [H, W] or [H, W, 1] gray.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidFrameError(f"frames must be numpy arrays, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidFrameError(f"frames must be uint8 arrays, got dtype {image.dtype}; convert with .astype(np.uint8)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidFrameError(f"expected an [H, W, 3] RGB (or RGBA or gray) image, got shape {image.shape}")
    _check_pixels(image.shape[1], image.shape[0], max_pixels)
    return np.ascontiguousarray(image)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidFrameError(
            f"image of {width}x{height} exceeds the limit of {max_pixels} pixels; send a smaller image "
            "or raise max_pixels"
        )
