"""Qwen3-VL (dense and MoE): preprocessing equals the stock processor, positions equal the stock model, and greedy
answers through Vigil (perception, memory, the transformers engine) equal stock ``generate`` on the same layout."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from assistant.config import VigilConfig
from assistant.models import ModelLoadError, load_adapter
from assistant.models.preprocess import normalize, patchify, resize_frames, to_unit_tensor
from assistant.models.qwen3_vl import split_visual
from assistant.models.tiny import build_tiny_model, ensure_tiny_model
from assistant.session import Session
from assistant.sources.files import VideoFileSource
from serving.engines.hf import HFEngine
from tests.support import collect_answer

FAMILIES = ("qwen3-vl", "qwen3-vl-moe")


@pytest.fixture(scope="module", params=FAMILIES)
def qwen3(request, vigil_home):
    """The tiny Qwen3-VL adapter of each family, loaded from its saved checkpoint."""
    return load_adapter(f"tiny-{request.param}", device="cpu", dtype="float32")


def _clip_frames(real_clips: dict[str, Path], n: int, fps: float = 2.0) -> list:
    frames = list(VideoFileSource(real_clips["bikes"], fps=fps, end=n / fps))[:n]
    assert len(frames) == n
    return frames


def test_the_checkpoints_are_qwen3_vl(qwen3) -> None:
    config = json.loads((Path(qwen3.name) / "config.json").read_text())
    assert config["model_type"] == qwen3.family in ("qwen3_vl", "qwen3_vl_moe")
    assert config["text_config"]["rope_parameters"]["mrope_interleaved"] is True
    if qwen3.family == "qwen3_vl_moe":
        text = config["text_config"]
        assert text.get("num_experts", text.get("num_local_experts")) == 4 and text["num_experts_per_tok"] == 2
        _check_published_expert_layout(qwen3)
    g = qwen3.geometry
    assert (g.patch_size, g.token_px, g.mean, g.std) == (16, 32, (0.5,) * 3, (0.5,) * 3)
    assert qwen3.deepstack_levels == 2
    assert qwen3.layout.stamp_text(12.0) == "<12.0 seconds>"
    tok = qwen3.tokenizer
    for special in ("<|im_start|>", "<|vision_start|>", "<|video_pad|>", "<think>", "<tool_call>"):
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id
    # the layout's header and answer opening are what the chat template writes
    text = tok.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == qwen3.layout.header_text("S") + "Q<|im_end|>\n<|im_start|>assistant\n"


def _check_published_expert_layout(adapter) -> None:
    """The MoE file holds the published expert layout, and loads back into exactly the model that was built."""
    from safetensors import safe_open
    from transformers import Qwen3VLMoeForConditionalGeneration

    with safe_open(Path(adapter.name) / "model.safetensors", "pt") as f:
        down = next(k for k in f.keys() if k.endswith("mlp.experts.down_proj"))  # noqa: SIM118
        assert tuple(f.get_slice(down).get_shape()) == (4, 48, 128)  # [E, I, H]
    torch.manual_seed(0)
    built = Qwen3VLMoeForConditionalGeneration(adapter.model.config)
    loaded = dict(adapter.model.named_parameters())
    assert all(torch.equal(p, loaded[name]) for name, p in built.named_parameters())


@pytest.mark.parametrize("size", [(64, 96), (128, 64), (40, 300)])
def test_patchify_equals_the_stock_pil_processor(qwen3, size: tuple[int, int]) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    g = qwen3.geometry
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    stock = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, image_mean=list(g.mean), image_std=list(g.std),
        size={"shortest_edge": g.min_pixels, "longest_edge": g.max_pixels},
    )(images=[image], return_tensors="pt")  # fmt: skip
    resized = resize_frames(to_unit_tensor(image), g.target_size(*size))
    if tuple(resized.shape[-2:]) == size:  # same size: no resampling difference, the patches are equal
        ours, grid = patchify(normalize(resized, g), g)
        assert torch.allclose(stock["pixel_values"], ours, atol=1e-5)
    else:
        _, grid = patchify(normalize(resized, g), g)
    assert list(stock["image_grid_thw"][0]) == list(grid)


def test_encode_is_deepstack_rows_step_by_step(qwen3) -> None:
    g = qwen3.geometry
    x = normalize(resize_frames(to_unit_tensor(np.zeros((4, 96, 128, 3), np.uint8) + 90), (96, 128)), g)
    patches, grid = patchify(x, g)
    rows = qwen3.encode(patches, grid)  # [N, D * 3]
    d = qwen3.hidden_size
    assert rows.shape == (grid[0] * grid[1] * grid[2] // 4, d * 3)
    stock = qwen3.model.model.get_video_features(patches, torch.tensor([grid]), return_dict=True)
    main, levels = split_visual(rows, d)
    assert torch.allclose(main, torch.cat(stock.pooler_output), atol=1e-5)
    assert torch.allclose(levels[1], torch.cat(stock.deepstack_features[1]), atol=1e-5)
    half = patches.shape[0] // 2
    steps = [qwen3.encode(p, (1, grid[1], grid[2])) for p in (patches[:half], patches[half:])]
    assert torch.allclose(rows, torch.cat(steps), atol=1e-5)
    with pytest.raises(ValueError, match="not a multiple"):
        split_visual(rows[:, :-1], d)


def _session(adapter, reuse_kv: bool = True) -> tuple[HFEngine, Session, VigilConfig]:
    config = VigilConfig(
        perception={"fps": 2.0, "drop": {"mode": "pixel", "threshold": 0.0}},  # drop off: every token kept
        memory={"budget_tokens": 4096},
        engine={"max_new_tokens": 8, "kv_cap_tokens": 8192, "reuse_kv": reuse_kv},
    )
    engine = HFEngine(adapter, config.engine)
    return engine, Session("s", config, adapter, engine), config


def _stock_layout(adapter, config: VigilConfig, entries: list, grid: tuple[int, int], question: tuple[float, str]):
    """Token ids of the same context, laid out by hand in Qwen3-VL's native video form."""
    layout = adapter.layout
    ids = layout.header_ids(config.engine.system_prompt)
    for entry in entries:
        ids += layout.video_segment_ids(entry.t_start, grid[0] * grid[1])[0]
    ids += layout.question_ids(*question)
    return torch.tensor([ids])


def test_positions_and_greedy_answers_equal_stock_generate(qwen3, real_clips) -> None:
    """Drop off: the engine's positions equal stock get_rope_index and its greedy answer equals stock generate."""
    frames = _clip_frames(real_clips, 6)

    async def run(reuse_kv: bool = True):
        engine, session, config = _session(qwen3, reuse_kv)
        await session.start()
        updates = [u for f in frames if (u := session.ingest(f)) is not None]
        assert len(updates) == 3 and all(u.drop_ratio == 0 for u in updates)
        _, done = await collect_answer(session.ask("what happened?", 3.0))
        ctx = engine._sessions["s"]
        positions = torch.cat([r.positions for r in ctx.records.values() if r.kind != "text"], dim=1)
        await session.close()
        await engine.shutdown()
        return updates, done, positions, session, config

    updates, done, positions, session, config = asyncio.run(run())
    # the baseline that re-prefills the whole context in one pass (DeepStack joined over segments) answers alike
    assert asyncio.run(run(reuse_kv=False))[1].text == done.text
    entries = list(session.memory.entries)
    assert [e.embeddings.shape[1] for e in entries] == [qwen3.hidden_size * 3] * 3  # DeepStack rode along
    gh, gw = updates[0].grid
    ids = _stock_layout(qwen3, config, entries, (gh, gw), (3.0, "what happened?"))
    video = ids == qwen3.token_ids.video_pad
    g = qwen3.geometry
    x = torch.cat([resize_frames(to_unit_tensor(f.image), (gh * 32, gw * 32)) for f in frames])
    patches, grid = patchify(normalize(x, g), g)
    stock_pos, _ = qwen3.model.model.get_rope_index(ids, video.int() * 2, video_grid_thw=torch.tensor([grid]))
    question = len(qwen3.layout.question_ids(3.0, "what happened?"))
    assert torch.equal(positions, stock_pos[:, 0, : ids.shape[1] - question])
    stock = qwen3.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values_videos=patches,
        video_grid_thw=torch.tensor([grid]),
        mm_token_type_ids=video.int() * 2,
        max_new_tokens=8,
        do_sample=False,
    )[0, ids.shape[1] :].tolist()
    eos = set(qwen3.model.generation_config.eos_token_id)
    stock = stock[: next((i for i, t in enumerate(stock) if t in eos), len(stock))]
    assert done.stats.generated_tokens == len(stock) > 0
    assert done.text == qwen3.tokenizer.decode(stock, skip_special_tokens=True)


def test_kept_tokens_carry_their_deepstack_features(qwen3, real_clips) -> None:
    """With the drop on, each entry's rows are exactly the kept tokens' rows of the whole step's encoding."""
    frames = _clip_frames(real_clips, 4)
    config = VigilConfig(perception={"fps": 2.0, "drop": {"mode": "feature", "drop_ratio": 0.5}})
    engine = HFEngine(qwen3, config.engine)
    session = Session("s", config, qwen3, engine)

    async def run():
        await session.start()
        updates = [u for f in frames if (u := session.ingest(f)) is not None]
        _, done = await collect_answer(session.ask("what changed?", 2.0))  # kept rows prefilled with DeepStack
        await engine.shutdown()
        return updates, done

    updates, done = asyncio.run(run())
    assert done.stats.prompt_tokens > 0 and done.stats.synced_tokens > 0
    g = qwen3.geometry
    gh, gw = updates[1].grid
    x = torch.cat([resize_frames(to_unit_tensor(f.image), (gh * 32, gw * 32)) for f in frames[2:4]])
    whole = qwen3.encode(*patchify(normalize(x, g), g))  # [gh * gw, 3D]
    second = updates[1]
    assert 0 < second.num_kept < gh * gw
    assert torch.allclose(second.embeddings, whole[second.kept_indices], atol=1e-5)
    assert second.features.shape[1] == qwen3.hidden_size  # the drop and the policies compare the embedding part
    entry = session.memory.entries[-1]
    assert entry.nbytes < entry.embeddings.numel() * 4 + entry.features.numel() * 4  # features are a view
    pruned = entry.select(torch.tensor([0]))
    assert torch.equal(pruned.embeddings[0], entry.embeddings[0]) and pruned.features.shape == (1, qwen3.hidden_size)
    from memory.archive import deserialize_entry, serialize_entry

    data = serialize_entry(entry)
    back = deserialize_entry(data)  # the archive stores the rows once and the features as their view
    assert len(data) < entry.embeddings.numel() * 4 + entry.features.numel() * 4
    assert torch.equal(back.embeddings, entry.embeddings) and back.nbytes == entry.nbytes


def test_tiny_families_and_their_errors(tmp_path, vigil_home) -> None:
    assert ensure_tiny_model(family="qwen3-vl") == ensure_tiny_model(family="qwen3-vl")
    with pytest.raises(ValueError, match=r"choose from qwen2\.5-vl, qwen3-vl, qwen3-vl-moe"):
        build_tiny_model(tmp_path, family="qwen4")
    with pytest.raises(ModelLoadError, match="no tiny model 'tiny-qwen4'"):
        load_adapter("tiny-qwen4")


@pytest.mark.parametrize(("preset", "billions"), [("qwen3-vl-8b", 8.77), ("qwen3-vl-30b-a3b", 31.07)])
def test_real_size_presets_have_the_published_parameter_counts(vigil_home, preset: str, billions: float) -> None:
    from assistant.models.presets import build_random_adapter

    adapter = build_random_adapter(preset, device="meta")  # shapes only: no memory, no compute
    assert adapter.family == ("qwen3_vl_moe" if "a3b" in preset else "qwen3_vl") and adapter.deepstack_levels == 3
    assert adapter.geometry.token_px == 32
    assert round(sum(p.numel() for p in adapter.model.parameters()) / 1e9, 2) == billions
    with pytest.raises(ValueError, match=r"unknown preset 'qwen3-vl-9b'; choose from .*qwen3-vl-30b-a3b"):
        build_random_adapter("qwen3-vl-9b")
