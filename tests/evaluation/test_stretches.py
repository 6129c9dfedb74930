"""A video played in stretches: every frame once, in order, each stretch ending at its time."""

from __future__ import annotations

import asyncio

from assistant.sources import VideoFileSource, aiter_frames
from evaluation.stretches import SourceCursor
from evaluation.synthetic import write_clip


async def _times(source) -> list[float]:
    return [frame.t async for frame in aiter_frames(source)]


def test_stretches_partition_the_frames_at_their_times(tmp_path) -> None:
    clip = write_clip(tmp_path / "c.mp4", seconds=5, fps=10, width=64, height=48)
    with VideoFileSource(clip.path, fps=2) as whole:
        expected = [frame.t for frame in whole]
    assert len(expected) == 10

    async def play() -> list[list[float]]:
        with SourceCursor(VideoFileSource(clip.path, fps=2)) as cursor:
            first = await _times(cursor.upto(1.5))
            held = cursor.next_t
            second = await _times(cursor.upto(3.0, inclusive=False))
            third = await _times(cursor.upto(3.0))
            rest = await _times(cursor.rest())
            return [first, [held], second, third, rest, [cursor.next_t]]

    first, (held,), second, third, rest, (after,) = asyncio.run(play())
    assert first == [t for t in expected if t <= 1.5] and held == 2.0
    assert second == [2.0, 2.5] and third == [3.0]
    assert first + second + third + rest == expected
    assert after is None  # the source ended


def test_closing_the_cursor_closes_the_source(tmp_path) -> None:
    clip = write_clip(tmp_path / "c.mp4", seconds=3, fps=10, width=64, height=48)
    source = VideoFileSource(clip.path, fps=2)

    async def play() -> list[float]:
        with SourceCursor(source) as cursor:
            return await _times(cursor.upto(0.5))

    assert asyncio.run(play()) == [0.0, 0.5]
    assert list(source) == []  # closed: no further frames
    assert source.end is not None and source.end.reason == "closed"
