"""Frame sources on real files, a real HTTP stream on loopback, and pushed frames."""

from __future__ import annotations

import asyncio
import functools
import http.server
import io
import math
import struct
import threading
import time
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from assistant.sources import (
    FpsSampler,
    InvalidFrameError,
    Pacer,
    PushSource,
    SourceNotFoundError,
    SourceOpenError,
    StreamSource,
    VideoFileSource,
    aiter_frames,
    decode_image,
    open_source,
)

FPS, SECONDS, W, H = 10, 3, 64, 48


def colour(k: int) -> int:
    return (k * 8) % 256


def write_clip(path: Path, n: int = FPS * SECONDS, container_format: str | None = None) -> Path:
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream("h264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"g": "5", "crf": "10"}
        for k in range(n):
            img = np.full((H, W, 3), colour(k), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("src") / "clip.mp4")


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_file_timestamps_and_content(clip: Path, backend: str) -> None:
    frames = list(VideoFileSource(clip, backend=backend))
    assert len(frames) == FPS * SECONDS
    assert [f.t for f in frames[:3]] == pytest.approx([0.0, 0.1, 0.2])
    assert [f.index for f in frames] == list(range(len(frames)))
    for k in (0, 7, 29):
        assert abs(int(frames[k].image.mean()) - colour(k)) <= 3
        assert frames[k].image.shape == (H, W, 3) and frames[k].image.dtype == np.uint8


def test_sampling_to_2_fps_and_above_native(clip: Path) -> None:
    two = list(VideoFileSource(clip, fps=2))
    assert [f.t for f in two] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert [f.source_index for f in two] == [0, 5, 10, 15, 20, 25]
    assert len(list(VideoFileSource(clip, fps=30))) == FPS * SECONDS


def test_backends_agree(clip: Path) -> None:
    a = list(VideoFileSource(clip, fps=3, backend="pyav"))
    b = list(VideoFileSource(clip, fps=3, backend="decord"))
    assert [f.t for f in a] == pytest.approx([f.t for f in b])
    assert [f.source_index for f in a] == [f.source_index for f in b]


def test_trimming(clip: Path) -> None:
    frames = list(VideoFileSource(clip, start=1.0, end=2.0))
    assert len(frames) == 10 and frames[0].t == pytest.approx(0.0)
    assert abs(int(frames[0].image.mean()) - colour(10)) <= 3


def test_real_clips(real_clips) -> None:
    for name, path in real_clips.items():
        source = VideoFileSource(path, fps=1)
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            assert (source.width, source.height) == (s.codec_context.width, s.codec_context.height)
        frames = list(source)
        assert abs(len(frames) - math.ceil(source.duration)) <= 1, name
        assert frames[0].image.shape == (source.height, source.width, 3)
        assert source.end.reason == "eof"


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="not found"):
        VideoFileSource(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video at all")
    with pytest.raises(SourceOpenError, match="cannot open"):
        VideoFileSource(bad)


def test_truncated_file_yields_what_it_has(tmp_path: Path) -> None:
    full = write_clip(tmp_path / "full.ts", n=60, container_format="mpegts")
    cut = tmp_path / "cut.ts"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    source = VideoFileSource(cut)
    frames = list(source)
    assert 10 < len(frames) < 60
    assert source.end.reason in ("eof", "truncated") and source.end.frames_yielded == len(frames)


def test_http_stream_on_loopback(clip: Path) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{clip.name}"
        streamed = list(open_source(url, fps=2))
        assert [f.t for f in streamed] == pytest.approx([f.t for f in VideoFileSource(clip, fps=2)])
    finally:
        server.shutdown()


def test_unreachable_stream_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(SourceOpenError):
        StreamSource("http://127.0.0.1:9/none.mp4", open_timeout=2, read_timeout=2)
    assert time.monotonic() - started < 10


def _png(w: int, h: int, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_push_source_from_another_thread() -> None:
    source = PushSource(max_queue=100)

    def produce() -> None:
        for k in range(5):
            source.push(np.full((8, 8, 3), k, np.uint8), t=k * 0.5)
        jpeg = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(jpeg, format="JPEG")
        source.push(jpeg.getvalue(), t=3.0)
        source.push(_png(8, 8), t=3.5)
        source.close()

    threading.Thread(target=produce).start()
    frames = list(source)
    assert [f.t for f in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 3.5]
    assert abs(int(frames[5].image.mean()) - 200) <= 3
    assert source.end.reason == "closed" and not source.push(np.zeros((8, 8, 3), np.uint8))


def test_push_rejects_bad_frames_and_keeps_working() -> None:
    source = PushSource()
    source.push(np.zeros((8, 8, 3), np.uint8), t=1.0)
    bad = [
        (b"\x89PNG\r\n\x1a\n garbage", "not a decodable image"),
        (_png(8, 8)[:40], "not a decodable image"),
        (b"", "empty"),
        (np.zeros((8, 8, 2), np.uint8), r"\[H, W, 3\]"),
        (np.zeros((8, 8, 3), np.float32), "uint8"),
    ]
    for data, message in bad:
        with pytest.raises(InvalidFrameError, match=message):
            source.push(data, t=2.0)
    with pytest.raises(InvalidFrameError, match="before the previous frame"):
        source.push(np.zeros((8, 8, 3), np.uint8), t=0.5)
    source.push(np.zeros((8, 8), np.uint8), t=2.0)  # gray is converted
    source.close()
    assert [f.t for f in source] == [1.0, 2.0]


def _declared(w: int, h: int) -> bytes:
    """A tiny PNG whose header declares w x h pixels."""
    header = _png(8, 8)
    chunk = b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return header[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + header[33:]


@pytest.mark.parametrize(("w", "h"), [(5000, 5000), (100_000, 100_000)])
def test_decompression_bomb_is_rejected(w: int, h: int) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidFrameError, match="exceeds"):
        decode_image(_declared(w, h), max_pixels=4096 * 4096)
    assert time.monotonic() - started < 5


def test_push_backpressure_drops_oldest() -> None:
    source = PushSource(max_queue=3)
    for k in range(7):
        source.push(np.full((4, 4, 3), k, np.uint8), t=float(k))
    source.close()
    frames = list(source)
    assert [f.t for f in frames] == [4.0, 5.0, 6.0] or [f.t for f in frames] == [5.0, 6.0]
    assert source.dropped == 7 - len(frames) and source.accepted == 7


def test_sampler_and_pacer() -> None:
    s = FpsSampler(2.0)
    # due times stay on the 0.5 s grid: after the gap, 3.1 is taken and the next due is 3.5
    assert [s.accept(t) for t in (0.0, 0.2, 0.5, 0.6, 3.1, 3.5, 3.6)] == [True, False, True, False, True, True, False]
    with pytest.raises(ValueError, match="positive"):
        FpsSampler(0)
    with pytest.raises(ValueError, match="pace"):
        Pacer(-1)
    pacer = Pacer("realtime")
    started = time.monotonic()
    for t in (0.0, 0.5, 1.0):
        pacer.wait(t)
    assert time.monotonic() - started >= 0.95


def test_realtime_file_pacing(clip: Path) -> None:
    started = time.monotonic()
    frames = list(VideoFileSource(clip, fps=2, pace="realtime", end=1.01))
    assert len(frames) == 3 and time.monotonic() - started >= 0.95


def test_async_iteration(clip: Path) -> None:
    async def collect() -> list[float]:
        return [f.t async for f in aiter_frames(VideoFileSource(clip, fps=1))]

    assert asyncio.run(collect()) == pytest.approx([0.0, 1.0, 2.0])
