"""Frame sources on real files, real HTTP streams on loopback and frames pushed from other threads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import io
import itertools
import logging
import math
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from assistant.sources import (
    FpsSampler,
    Frame,
    FrameSource,
    InvalidFrameError,
    Pacer,
    SourceError,
    SourceNotFoundError,
    SourceOpenError,
    StreamSource,
    VideoFileSource,
    aiter_frames,
    as_rgb,
    decode_image,
    open_source,
)

FPS, SECONDS, W, H = 10, 3, 64, 48
N = FPS * SECONDS
BACKENDS = ["pyav", "decord"]


def colour(k: int) -> int:
    """The grey level of frame k in the generated clips."""
    return (k * 8) % 256


def write_clip(
    path: Path,
    n: int = N,
    container_format: str | None = None,
    options: dict[str, str] | None = None,
    noise: bool = False,
) -> Path:
    """An h264 clip at 10 fps: frame k is solid colour(k), or noise (so bytes spread evenly over time)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=container_format, options=options or {}) as out:
        stream = out.add_stream("h264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"g": "5", "crf": "10"}
        for k in range(n):
            img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8) if noise else np.full((H, W, 3), colour(k), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def cut(path: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    target = path.with_name("cut_" + path.name)
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def grey(frame: Frame) -> int:
    return round(float(frame.image.mean()))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


# --- files ---


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_frame_with_exact_times_and_content(clip: Path, backend: str) -> None:
    source = VideoFileSource(clip, backend=backend)
    assert (source.width, source.height, source.native_fps, source.duration) == (W, H, 10.0, 3.0)
    frames = list(source)
    assert [f.t for f in frames] == pytest.approx([k / FPS for k in range(N)], abs=1e-9)
    assert [f.index for f in frames] == list(range(N))
    assert [f.source_index for f in frames] == list(range(N))
    assert all(abs(grey(f) - colour(f.source_index)) <= 3 for f in frames)
    image = frames[7].image
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert source.end is not None and (
        source.end.reason,
        source.end.frames_decoded,
        source.end.frames_yielded,
    ) == (
        "eof",
        N,
        N,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_at_2_fps_keeps_exact_due_times(clip: Path, backend: str) -> None:
    source = VideoFileSource(clip, fps=2, backend=backend)
    frames = list(source)
    assert [f.t for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], abs=1e-9)
    assert [f.source_index for f in frames] == [0, 5, 10, 15, 20, 25]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 5]
    assert all(abs(grey(f) - colour(f.source_index)) <= 3 for f in frames)
    assert (source.end.frames_decoded, source.end.frames_yielded) == (N, 6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fps_above_native_keeps_every_frame_once(clip: Path, backend: str) -> None:
    frames = list(VideoFileSource(clip, fps=25, backend=backend))
    assert [f.source_index for f in frames] == list(range(N))


def test_backends_give_the_same_frames(clip: Path) -> None:
    a = list(VideoFileSource(clip, fps=3, backend="pyav"))
    b = list(VideoFileSource(clip, fps=3, backend="decord"))
    assert [f.t for f in a] == [f.t for f in b] == pytest.approx([0, 0.4, 0.7, 1.0, 1.4, 1.7, 2.0, 2.4, 2.7])
    assert [f.source_index for f in a] == [f.source_index for f in b]
    assert all(np.abs(x.image.astype(int) - y.image.astype(int)).max() <= 2 for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_end_trim_keeps_stream_times(clip: Path, backend: str) -> None:
    source = VideoFileSource(clip, backend=backend, start=1.0, end=2.0)
    frames = list(source)
    assert [f.t for f in frames] == pytest.approx([1.0 + k / FPS for k in range(10)], abs=1e-9)
    assert [f.source_index for f in frames] == list(range(10, 20))
    assert [f.index for f in frames] == list(range(10))
    assert abs(grey(frames[0]) - colour(10)) <= 3
    assert source.end.reason == "eof" and "end of the window" in source.end.message
    sampled = list(VideoFileSource(clip, fps=2, backend=backend, start=1.05))
    assert [f.t for f in sampled] == pytest.approx([1.1, 1.6, 2.1, 2.6], abs=1e-9)


def test_real_clips_metadata_and_sampling(real_clips: dict[str, Path]) -> None:
    assert {"bikes", "bigbuckbunny", "carphone_pristine"} <= set(real_clips)
    for name, path in real_clips.items():
        source = VideoFileSource(path, fps=1)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert (source.width, source.height) == (
                stream.codec_context.width,
                stream.codec_context.height,
            ), name
            assert source.native_fps == pytest.approx(float(stream.average_rate)), name
            assert source.duration == pytest.approx(float(stream.duration * stream.time_base)), name
        frames = list(source)
        assert abs(len(frames) - math.ceil(source.duration)) <= 1, name
        assert all(f.image.shape == (source.height, source.width, 3) for f in frames), name
        assert frames[0].t == 0.0 and all(b.t - a.t >= 1 - 1e-6 for a, b in itertools.pairwise(frames)), name
        assert source.end.reason == "eof", name


def test_real_clip_both_backends_agree(real_clips: dict[str, Path]) -> None:
    a = list(VideoFileSource(real_clips["carphone_pristine"], fps=4, backend="pyav"))
    b = list(VideoFileSource(real_clips["carphone_pristine"], fps=4, backend="decord"))
    assert len(a) == 16 and [f.source_index for f in a] == [f.source_index for f in b]
    assert [f.t for f in a] == pytest.approx([f.t for f in b], abs=1e-6)
    assert all(np.abs(x.image.astype(int) - y.image.astype(int)).mean() < 1 for x, y in zip(a, b, strict=True))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"not found: .*nope\.mp4"):
        VideoFileSource(tmp_path / "nope.mp4")
    assert issubclass(SourceNotFoundError, SourceError)


@pytest.mark.parametrize("backend", BACKENDS)
def test_files_that_are_not_video(tmp_path: Path, backend: str) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(SourceOpenError, match=r"cannot open .*notes\.mp4"):
        VideoFileSource(text, backend=backend)
    with pytest.raises(SourceOpenError, match="is not a file"):
        VideoFileSource(tmp_path, backend=backend)
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    with pytest.raises(SourceOpenError, match="no video stream"):
        VideoFileSource(audio, backend=backend)


def test_bad_arguments(clip: Path) -> None:
    for kwargs, message in [
        ({"fps": 0}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"pace": "slow"}, "pace"),
        ({"backend": "gpu"}, "backend"),
        ({"start": -1.0}, "start"),
        ({"start": 2.0, "end": 2.0}, "end"),
    ]:
        with pytest.raises(ValueError, match=message):
            VideoFileSource(clip, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_mkv_yields_what_it_has(tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    truncated = cut(write_clip(tmp_path / "noise.mkv", noise=True))
    with caplog.at_level(logging.WARNING, logger="assistant.sources"):
        source = VideoFileSource(truncated, backend=backend)
        frames = list(source)
    assert source.backend == backend
    assert 5 < len(frames) < N
    assert [f.t for f in frames] == pytest.approx([k / FPS for k in range(len(frames))], abs=1e-9)
    assert source.end.reason == "truncated" and "declares 3.00 s" in source.end.message
    assert source.end.frames_yielded == len(frames)
    assert any("truncated" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_faststart_mp4(tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    """decord cannot open an mp4 cut mid-data, so that backend falls back to PyAV with a warning."""
    truncated = cut(write_clip(tmp_path / "noise.mp4", options={"movflags": "faststart"}, noise=True))
    with caplog.at_level(logging.WARNING, logger="assistant.sources"):
        source = VideoFileSource(truncated, backend=backend)
        frames = list(source)
    assert source.backend == "pyav"
    assert 5 < len(frames) < N and frames[-1].t == pytest.approx((len(frames) - 1) / FPS)
    assert source.end.reason == "truncated"
    if backend == "decord":
        assert any("decoding with PyAV instead" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_middle_skips_bad_frames_and_goes_on(tmp_path: Path, backend: str) -> None:
    path = write_clip(tmp_path / "noise.mp4", options={"movflags": "faststart"}, noise=True)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + len(data) // 12] = np.random.default_rng(1).bytes(len(data) // 12)
    path.write_bytes(bytes(data))
    source = VideoFileSource(path, backend=backend)
    frames = list(source)
    assert 15 < len(frames) < N and frames[-1].t == pytest.approx(2.9)
    assert source.end.reason == "truncated" and "could not be decoded" in source.end.message


# --- pacing, closing, re-iteration ---


def test_realtime_pacing_of_a_file(clip: Path) -> None:
    started = time.monotonic()
    frames = list(VideoFileSource(clip, fps=2, pace="realtime", end=1.01))
    assert [f.t for f in frames] == pytest.approx([0.0, 0.5, 1.0])
    assert time.monotonic() - started >= 0.95


def test_close_from_another_thread_stops_a_paced_file(clip: Path) -> None:
    source = VideoFileSource(clip, pace="realtime")
    threading.Timer(0.3, source.close).start()
    started = time.monotonic()
    frames = list(source)
    assert time.monotonic() - started < 2.0
    assert 1 <= len(frames) < N and source.end.reason == "closed"


def test_context_manager_close_and_reiteration(clip: Path) -> None:
    with VideoFileSource(clip, fps=5) as source:
        assert isinstance(source, FrameSource)
        assert [f.source_index for f in source] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28]
        assert [f.source_index for f in source][:3] == [0, 2, 4]  # a file can be read again
        for frame in source:
            if frame.index == 2:
                break
    assert source.end.reason == "closed" and source.end.frames_yielded == 2
    source.close()  # idempotent
    assert list(source) == [] and source.end.reason == "closed"


def test_one_consumer_at_a_time(clip: Path) -> None:
    source = VideoFileSource(clip)
    first = iter(source)
    next(first)
    with pytest.raises(RuntimeError, match="already being iterated"):
        next(iter(source))
    first.close()
    assert source.end.reason == "closed"


def test_fps_sampler() -> None:
    s = FpsSampler(2.0)
    # due times stay on the 0.5 s grid; after the gap, 3.1 is taken and the next due time is 3.5
    assert [s.accept(t) for t in (0.0, 0.2, 0.5, 0.6, 3.1, 3.5, 3.6, 3.5)] == [
        *(True, False, True, False, True, True, False, False)
    ]
    s = FpsSampler(10.0)
    t, kept = 0.0, 0
    for _ in range(100):  # accumulated float error stays within the tolerance
        kept += s.accept(t)
        t += 0.1
    assert kept == 100
    s = FpsSampler(10.0)
    assert [s.accept(t) for t in (1.0, 1.0999995, 1.19999)] == [True, True, False]
    assert all(FpsSampler(None).accept(t) for t in (0.0, 0.0, 0.001))
    for bad in (0, -1, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            FpsSampler(bad)  # type: ignore[arg-type]


def test_pacer() -> None:
    pacer = Pacer("realtime")
    started = time.monotonic()
    for t in (10.0, 10.5, 11.0):
        pacer.wait(t)
    assert time.monotonic() - started >= 0.95
    fast = Pacer(4.0)
    started = time.monotonic()
    for t in (0.0, 1.0, 2.0):
        fast.wait(t)
    assert time.monotonic() - started >= 0.45
    unpaced = Pacer("max")
    started = time.monotonic()
    for t in range(10_000):  # paced, this would take hours
        unpaced.wait(float(t))
    assert time.monotonic() - started < 5
    interrupt = threading.Event()
    interrupted = Pacer(1.0, interrupt=interrupt)
    interrupted.wait(0.0)
    interrupt.set()
    started = time.monotonic()
    interrupted.wait(1000.0)
    assert time.monotonic() - started < 5
    for bad in (0, -1.0, "slow", True):
        with pytest.raises(ValueError, match="pace must be"):
            Pacer(bad)  # type: ignore[arg-type]


# --- streams ---


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_stream_gives_the_same_frames_as_the_file(clip: Path) -> None:
    handler = functools.partial(_QuietHandler, directory=str(clip.parent))
    with serve(handler) as base:  # type: ignore[arg-type]
        source = open_source(f"{base}/{clip.name}", fps=2)
        assert isinstance(source, StreamSource)
        streamed = list(source)
    from_file = list(VideoFileSource(clip, fps=2))
    assert [f.t for f in streamed] == [f.t for f in from_file] == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5])
    assert [f.source_index for f in streamed] == [f.source_index for f in from_file]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(streamed, from_file, strict=True))
    assert source.end.reason == "eof"
    assert list(source) == [] and "already been read" in source.end.message


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["drop", "stall"])
def test_stream_that_stops_sending_ends_with_error(tmp_path: Path, mode: str) -> None:
    payload = write_clip(tmp_path / "noise.ts", container_format="mpegts", noise=True).read_bytes()
    release = threading.Event()

    class Partial(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            if mode == "stall":
                release.wait(30)

        def log_message(self, *args: object) -> None:
            pass

    with serve(Partial) as base:
        started = time.monotonic()
        try:
            source = StreamSource(f"{base}/live.ts", open_timeout=2, read_timeout=1)
            frames = list(source)
        finally:
            release.set()
        elapsed = time.monotonic() - started
    assert elapsed < 8
    assert 3 <= len(frames) < N
    assert source.end.reason == "error" and f"{base}/live.ts" in source.end.message
    assert "stopped after" in source.end.message


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_unreachable_stream_fails_fast_at_open(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{closed_port()}/live"
    started = time.monotonic()
    with pytest.raises(SourceOpenError, match=f"cannot open '{url}'"):
        open_source(url)
    assert time.monotonic() - started < 5


def test_stream_arguments_are_checked_before_connecting() -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        StreamSource("rtsp://127.0.0.1:1/x", read_timeout=0)


def test_open_source_dispatch(clip: Path) -> None:
    for spec in (str(clip), clip, f"file://{clip}"):
        source = open_source(spec, fps=2)
        assert isinstance(source, VideoFileSource) and len(list(source)) == 6
    with pytest.raises(SourceNotFoundError):
        open_source("no/such/video.mp4")


# --- still images ---


def encode(image: np.ndarray, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **params)
    return buf.getvalue()


def solid(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def test_encoded_images_and_arrays_become_rgb() -> None:
    encoded = [
        (encode(solid(200), "JPEG", quality=95), 200),
        (encode(solid(100), "PNG"), 100),
        (encode(solid(50), "WEBP", lossless=True), 50),
        (encode(np.full((16, 16), 60, np.uint8), "PNG"), 60),  # a grey PNG
    ]
    arrays = [
        (solid(40), 40),
        (np.dstack([solid(70), np.zeros((16, 16), np.uint8)]), 70),  # RGBA: alpha dropped
        (np.full((16, 16), 90, np.uint8), 90),  # grey [H, W]
        (np.full((16, 16, 1), 110, np.uint8), 110),  # grey [H, W, 1]
    ]
    images = [(decode_image(data), value) for data, value in encoded] + [(as_rgb(a), value) for a, value in arrays]
    for image, value in images:
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
        assert abs(round(float(image.mean())) - value) <= 2


def test_unusable_images_are_refused_with_the_reason() -> None:
    png = encode(solid(10), "PNG")
    bad_bytes = [
        (b"\x89PNG\r\n\x1a\n not really a png", "not a decodable JPEG/PNG/WEBP image"),
        (png[: len(png) // 2], "not a decodable"),
        (encode(solid(10), "JPEG")[:200], "not a decodable"),
        (encode(solid(10), "BMP"), "not a decodable"),  # a format we do not accept
        (b"", "empty image data"),
    ]
    for data, message in bad_bytes:
        with pytest.raises(InvalidFrameError, match=message):
            decode_image(data)
    bad_arrays: list[tuple[object, str]] = [
        (np.zeros((8, 8, 2), np.uint8), r"expected an \[H, W, 3\]"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"expected an \[H, W, 3\]"),
        (np.zeros((0, 8, 3), np.uint8), r"expected an \[H, W, 3\]"),
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        ([[0, 0, 0]], "numpy arrays"),
    ]
    for array, message in bad_arrays:
        with pytest.raises(InvalidFrameError, match=message):
            as_rgb(array)  # type: ignore[arg-type]
    assert decode_image(png).shape == (16, 16, 3)  # a good image after bad ones
    assert issubclass(InvalidFrameError, ValueError)


def png_declaring(width: int, height: int) -> bytes:
    """A small valid PNG whose header is rewritten to declare width x height pixels."""
    png = encode(solid(0, 8), "PNG")
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return png[:8] + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


@pytest.mark.parametrize(("width", "height"), [(5000, 5000), (100_000, 100_000)])
def test_declared_huge_image_is_rejected_before_decoding(width: int, height: int) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidFrameError, match="exceeds"):
        decode_image(png_declaring(width, height))
    assert time.monotonic() - started < 2


def test_decompression_bomb_is_rejected() -> None:
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, format="PNG")  # 36 Mpx in a few kB
    bomb = buf.getvalue()
    assert len(bomb) < 100_000
    with pytest.raises(InvalidFrameError, match="6000x6000 exceeds the limit of 16777216 pixels"):
        decode_image(bomb)
    with pytest.raises(InvalidFrameError, match="exceeds"):
        decode_image(encode(solid(3, 20), "PNG"), 100)
    with pytest.raises(InvalidFrameError, match="exceeds"):
        as_rgb(np.zeros((20, 20, 3), np.uint8), 100)
    assert as_rgb(np.zeros((10, 10, 3), np.uint8), 100).shape == (10, 10, 3)
    assert decode_image(encode(solid(3, 10), "PNG"), 100).shape == (10, 10, 3)


# --- asyncio ---


def test_aiter_frames_under_asyncio_run(clip: Path) -> None:
    async def collect() -> list[float]:
        return [f.t async for f in aiter_frames(VideoFileSource(clip, fps=1))]

    assert asyncio.run(collect()) == pytest.approx([0.0, 1.0, 2.0])


def test_aiter_frames_leaving_early_closes_the_source(clip: Path) -> None:
    source = VideoFileSource(clip, pace="realtime")  # 3 s of frames at 10 fps

    async def take_three() -> list[Frame]:
        got = []
        async with contextlib.aclosing(aiter_frames(source)) as frames:
            async for frame in frames:
                got.append(frame)
                if len(got) == 3:
                    break
        return got

    started = time.monotonic()
    got = asyncio.run(take_three())
    while source.end is None and time.monotonic() - started < 5:  # the worker thread ends its pass
        time.sleep(0.01)
    assert [f.index for f in got] == [0, 1, 2]
    assert source.end is not None and source.end.reason == "closed" and source.end.frames_yielded < N
    assert time.monotonic() - started < 2.0


def test_aiter_frames_raises_source_errors() -> None:
    def failing() -> Iterator[Frame]:
        yield Frame(0, 0.0, solid(0), 0)
        raise SourceError("the camera went away")

    async def collect() -> list[Frame]:
        return [f async for f in aiter_frames(failing())]

    with pytest.raises(SourceError, match="camera went away"):
        asyncio.run(collect())


def test_aiter_frames_leaving_a_plain_iterable_early() -> None:
    def endless() -> Iterator[Frame]:
        k = 0
        while True:
            yield Frame(k, k / 10, solid(0), k)
            k += 1

    async def take_two() -> list[int]:
        got = []
        async with contextlib.aclosing(aiter_frames(endless(), max_buffered=2)) as frames:
            async for frame in frames:
                got.append(frame.index)
                if len(got) == 2:
                    break
        return got

    assert asyncio.run(take_two()) == [0, 1]
