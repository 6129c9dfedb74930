"""Frame sources: video files and network streams, sampled to a target fps and paced; still-image decoding.

Every source is an iterable of ``Frame`` (RGB image + stream time) with ``close()`` and ``end``, which says
why iteration stopped. All of them go through one sampled, paced loop (``FpsSampler`` + ``Pacer``).
Modules: ``frame`` (types and errors), ``sampling`` (the core loop), ``pyav`` and ``decord_reader`` (decoding),
``files``, ``streams``, ``images`` (still images), ``aio`` (asyncio), ``factory`` (``open_source``).
"""

from assistant.sources.aio import aiter_frames
from assistant.sources.factory import open_source
from assistant.sources.files import VideoFileSource
from assistant.sources.frame import (
    EndReason,
    Frame,
    FrameSource,
    FrameTimeError,
    InvalidFrameError,
    Pace,
    SourceEnd,
    SourceError,
    SourceNotFoundError,
    SourceOpenError,
)
from assistant.sources.images import DEFAULT_MAX_PIXELS, IMAGE_FORMATS, as_rgb, decode_image
from assistant.sources.sampling import TIME_TOLERANCE, FpsSampler, Pacer
from assistant.sources.streams import StreamSource

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "TIME_TOLERANCE",
    "EndReason",
    "FpsSampler",
    "Frame",
    "FrameSource",
    "FrameTimeError",
    "InvalidFrameError",
    "Pace",
    "Pacer",
    "SourceEnd",
    "SourceError",
    "SourceNotFoundError",
    "SourceOpenError",
    "StreamSource",
    "VideoFileSource",
    "aiter_frames",
    "as_rgb",
    "decode_image",
    "open_source",
]
