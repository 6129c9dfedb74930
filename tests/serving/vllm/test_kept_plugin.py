"""The vLLM internals the kept-token plugin models stand on (``serving/engines/vllm_kept.py``).

These fail, rather than drift silently, when a vLLM upgrade moves what the plugin subclasses: the entry point,
the registry, the Qwen-VL parser / processor hooks and the M-RoPE layout the plugin extends. The end-to-end
proof (equal answers to the transformers engine) is ``test_kept_tokens.py``."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here (the .ci/vllm environment has it)")

from serving.engines.hf import _Record
from serving.engines.vllm_plugin import KEPT_ARCHITECTURES

pytestmark = pytest.mark.vllm


def test_the_plugin_targets_the_vllm_it_was_written_against() -> None:
    """vllm_kept.py overrides private hooks of vLLM 0.32's Qwen-VL; a new minor version must be re-checked."""
    import vllm

    assert vllm.__version__.startswith("0.32."), (
        f"vLLM {vllm.__version__}: re-check serving/engines/vllm_kept.py against its Qwen2-VL / Qwen2.5-VL "
        "models (parser, field config, prompt updates, get_mrope_input_positions, embed_multimodal)"
    )


def test_the_entry_point_registers_the_kept_models() -> None:
    from vllm import ModelRegistry
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    archs = set(ModelRegistry.get_supported_archs())
    assert set(KEPT_ARCHITECTURES.values()) <= archs
    from serving.engines.vllm_kept import KeptQwen2_5_VL, KeptQwen2VL, KeptQwen3VL, KeptQwen3VLMoe

    for cls in (KeptQwen2VL, KeptQwen2_5_VL, KeptQwen3VL, KeptQwen3VLMoe):
        assert "_processor_factory" in cls.__dict__  # our processor, not the parent's


def _feature(offset: int, grid: tuple[int, int], positions: torch.Tensor | None = None) -> SimpleNamespace:
    """A multimodal feature as the model runner hands it (offset and per-item fields)."""
    data = {"image_grid_thw": SimpleNamespace(data=torch.tensor([1, grid[0] * 2, grid[1] * 2]))}
    if positions is not None:
        data["image_positions"] = SimpleNamespace(data=positions)
        data["image_num_tokens"] = SimpleNamespace(data=torch.tensor([positions.shape[0]]))
    return SimpleNamespace(mm_position=SimpleNamespace(offset=offset), data=data, modality="image")


def _model(cls, config):
    """The M-RoPE methods of ``cls`` bound to a stand-in holding only the config (no weights)."""
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration

    fake = SimpleNamespace(config=config)
    fake.iter_mm_grid_thw = functools.partial(Qwen2_5_VLForConditionalGeneration.iter_mm_grid_thw, fake)
    if hasattr(cls, "_relative_positions"):
        fake._relative_positions = functools.partial(cls._relative_positions, fake)
    return functools.partial(cls.get_mrope_input_positions, fake)


def test_kept_positions_are_the_transformers_engines_and_whole_grids_are_vllms(tiny_adapter) -> None:
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration

    from serving.engines.vllm_kept import KeptQwen2_5_VL

    config = tiny_adapter.model.config
    kept = _model(KeptQwen2_5_VL, config)
    # kept items: 5 text tokens, 3 kept tokens of a 4 x 6 grid, 2 text, 4 kept tokens, 3 text
    rows_a, cols_a = torch.tensor([0, 1, 3]), torch.tensor([5, 2, 0])
    rows_b, cols_b = torch.tensor([0, 0, 2, 2]), torch.tensor([1, 4, 1, 3])
    tokens = list(range(5 + 3 + 2 + 4 + 3))
    features = [
        _feature(5, (4, 6), torch.stack([torch.zeros(3, dtype=torch.long), rows_a, cols_a], 1)),
        _feature(10, (4, 6), torch.stack([torch.zeros(4, dtype=torch.long), rows_b, cols_b], 1)),
    ]
    got, delta = kept(tokens, features)
    want, cursor = [], 0
    for n_text, rows, cols in ((5, rows_a, cols_a), (2, rows_b, cols_b)):
        ids = torch.zeros(n_text + rows.numel(), dtype=torch.long)
        visual = torch.zeros(ids.numel(), dtype=torch.bool)
        visual[n_text:] = True
        pos, cursor = _Record("visual", ids, visual, None, rows, cols).layout(cursor)
        want.append(pos)
    text, cursor = _Record("text", torch.zeros(3, dtype=torch.long)).layout(cursor)
    want = torch.cat([*want, text], dim=1)  # [3, 17]
    assert torch.equal(got, want)
    assert delta == cursor - len(tokens)  # decoding continues where the transformers engine's cursor is
    # whole grids (no kept fields): exactly stock vLLM's layout
    grids = [_feature(3, (4, 6)), _feature(3 + 24 + 2, (2, 3))]
    tokens = list(range(3 + 24 + 2 + 6 + 4))
    stock = _model(Qwen2_5_VLForConditionalGeneration, config)
    mine, mine_delta = kept(tokens, grids)
    theirs, theirs_delta = stock(tokens, grids)
    assert torch.equal(mine, theirs) and mine_delta == theirs_delta


def test_the_parser_reads_kept_items_with_their_extra_fields(tiny_adapter) -> None:
    """An image_embeds dict with image_num_tokens and image_positions parses into items of N kept tokens."""
    from serving.engines.vllm_kept import KeptDataParser

    parser = KeptDataParser(2, expected_hidden_size=tiny_adapter.hidden_size)
    d = tiny_adapter.hidden_size
    data = {
        "image_embeds": [torch.randn(3, d), torch.randn(5, d)],
        "image_grid_thw": torch.tensor([[1, 8, 12], [1, 8, 12]]),
        "image_positions": [torch.zeros(3, 3, dtype=torch.long), torch.zeros(5, 3, dtype=torch.long)],
        "image_num_tokens": torch.tensor([[3], [5]]),
    }
    items = parser.parse_mm_data({"image": data})["image"]
    assert items.get_count() == 2
    assert [items.get(i)["image_embeds"].shape[0] for i in range(2)] == [3, 5]
    assert [items.get(i)["image_positions"].shape for i in range(2)] == [(3, 3), (5, 3)]
    whole = {"image_embeds": torch.randn(48, d), "image_grid_thw": torch.tensor([[1, 8, 12], [1, 8, 12]])}
    items = parser.parse_mm_data({"image": whole})["image"]  # stock whole-grid items still parse by their grid
    assert [items.get(i)["image_embeds"].shape[0] for i in range(2)] == [24, 24]
    required, optional = parser.embedding_field_sets("image")
    assert required == {"image_embeds", "image_grid_thw"} and {"image_positions", "image_num_tokens"} <= optional
