"""Perception: steps, drop, positions and timings on synthetic frames and real video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assistant.config import PerceptionConfig, VigilConfig
from assistant.models.preprocess import VisualGeometry
from assistant.perception import Perception, pixel_descriptors
from assistant.sources import Frame, VideoFileSource


def _frame(i: int, image: np.ndarray, fps: float = 1.0) -> Frame:
    return Frame(index=i, t=i / fps, image=image, source_index=i)


def _pixel(fps: float = 1.0, **drop) -> Perception:
    return Perception(PerceptionConfig(fps=fps, drop={"mode": "pixel", **drop}), geometry=VisualGeometry())


def test_static_frames_keep_first_step_only() -> None:
    p = _pixel()
    image = np.full((56, 84, 3), 90, np.uint8)
    updates = list(p.run(_frame(i, image) for i in range(8)))
    assert [u.step for u in updates] == [0, 1, 2, 3]
    assert [u.num_kept for u in updates] == [6, 0, 0, 0]
    assert [u.frame_indices for u in updates] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert updates[0].reset and not updates[1].reset
    assert p.stats.frames == 8 and p.stats.tokens == 24 and p.stats.kept == 6
    assert p.stats.weighted_drop_ratio == pytest.approx(18 / 24)
    assert set(updates[0].timings) == {"preprocess", "drop"}  # no encoder in pixel mode


def test_positions_and_times_follow_the_grid() -> None:
    p = _pixel(fps=2.0)
    rng = np.random.default_rng(0)
    updates = list(p.run(_frame(i, rng.integers(0, 256, (56, 84, 3), np.uint8), fps=2.0) for i in range(6)))
    assert [u.t_start for u in updates] == [0.0, 1.0, 2.0]
    assert [u.t_end for u in updates] == [1.0, 2.0, 3.0]
    u = updates[2]
    assert u.grid == (2, 3)
    # Qwen2.5-VL spacing without a model: 2 positions per second, 1 s per step
    assert torch.equal(u.positions[0], torch.full((u.num_kept,), 4))
    assert torch.equal(u.positions[1] * 3 + u.positions[2], u.kept_indices)


def test_moving_square_keeps_old_and_new_tokens() -> None:
    p = _pixel(threshold=0.05)
    frames = []
    for i in range(4):
        img = np.zeros((56, 112, 3), np.uint8)
        x = 28 * (i // 2)  # moves one token to the right every step
        img[:28, x : x + 28] = 255
        frames.append(_frame(i, img))
    updates = list(p.run(frames))
    assert updates[1].kept_indices.tolist() == [0, 1]


def test_partial_last_step_is_flushed() -> None:
    p = _pixel()
    image = np.zeros((56, 56, 3), np.uint8)
    updates = list(p.run(_frame(i, image) for i in range(3)))
    assert [u.frame_indices for u in updates] == [(0, 1), (2,)]
    assert p.stats.frames == 3


def test_frame_size_is_fixed_by_the_first_frame() -> None:
    p = _pixel()
    updates = list(p.run([_frame(0, np.zeros((56, 84, 3), np.uint8)), _frame(1, np.zeros((112, 168, 3), np.uint8))]))
    assert p.size == (56, 84) and updates[0].grid == (2, 3)


def test_pixel_descriptors_shape_and_means() -> None:
    x = torch.zeros(2, 3, 56, 84)
    x[:, 0, :28, :28] = 1.0
    d = pixel_descriptors(x, 28)
    assert d.shape == (6, 48)
    assert d[0, :16].tolist() == [1.0] * 16 and float(d[1:].abs().sum()) == 0.0


def test_feature_mode_with_tiny_model_on_real_video(tiny_adapter, real_clips) -> None:
    config = VigilConfig(perception={"fps": 2.0, "drop": {"mode": "feature", "threshold": 0.9}})
    p = Perception.from_config(config, tiny_adapter)
    with VideoFileSource(real_clips["bikes"], fps=2.0) as source:
        updates = list(p.run(source))
    assert len(updates) >= 3
    for u in updates:
        assert u.embeddings is not None and u.embeddings.shape == (u.num_kept, tiny_adapter.hidden_size)
        assert u.positions.shape == (3, u.num_kept)
        assert torch.equal(u.kept_indices, torch.sort(u.kept_indices).values)
        assert "encode" in u.timings
    assert updates[0].num_kept == updates[0].num_tokens
    assert p.stats.tokens == sum(u.num_tokens for u in updates)


def test_configuration_errors(tiny_adapter) -> None:
    with pytest.raises(ValueError, match="no model was given"):
        Perception(PerceptionConfig(drop={"mode": "feature"}))
    with pytest.raises(ValueError, match="temporal patch size"):
        Perception(PerceptionConfig(frames_per_step=3, drop={"mode": "pixel"}))
    one = Perception(PerceptionConfig(frames_per_step=1, drop={"mode": "feature"}), tiny_adapter)
    image = np.random.default_rng(1).integers(0, 256, (56, 56, 3), np.uint8)
    u = one.push(_frame(0, image))
    assert u is not None and u.frame_indices == (0,) and u.embeddings.shape == (4, 128)


def test_kept_frames_for_engines_that_encode_raw_frames(tiny_adapter) -> None:
    import asyncio

    from assistant.session import Session
    from serving.engines.hf import HFEngine

    p = Perception(PerceptionConfig(fps=1.0, drop={"mode": "pixel"}), keep_frames=True, geometry=VisualGeometry())
    image = np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8)
    update = next(iter(p.run(_frame(i, image) for i in range(2))))
    assert update.frames is not None and update.frames.dtype == torch.uint8
    assert tuple(update.frames.shape) == (2, 56, 84, 3)  # [T, H, W, 3] at the stream's resized size
    assert torch.equal(update.frames[0], torch.from_numpy(image))  # already a multiple of 28: unchanged
    assert next(iter(_pixel().run([_frame(0, image), _frame(1, image)]))).frames is None  # off by default

    # a session whose engine takes raw frames keeps them in memory and skips the vision encoder
    config = VigilConfig(
        model={"name": "tiny"},
        perception={"fps": 1.0, "drop": {"mode": "pixel"}},
        engine={"kind": "vllm", "vllm": {"visual_input": "frames"}},
    )
    engine = HFEngine(tiny_adapter, config.engine)  # stands in: only apply() is called here
    session = Session("s-frames", config, tiny_adapter, engine)
    asyncio.run(session.start())
    assert session.perception.keep_frames and not session.perception.encodes
    for i in range(2):
        session.ingest(_frame(i, image))
    entry = session.memory.entries[0]
    assert entry.frames is not None and entry.frames.shape[0] == 2 and entry.embeddings is None
