"""Model adapters: preprocessing equals the stock processor, positions equal the stock model, tiny model works."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from assistant.models import ModelLoadError, load_adapter, resolve_device, resolve_dtype
from assistant.models.preprocess import (
    VisualGeometry,
    normalize,
    patchify,
    resize_frames,
    smart_resize,
    to_unit_tensor,
    vision_positions,
)
from assistant.models.tiny import build_tiny_model, is_tiny_model


def _frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("size", [(56, 84), (112, 56), (28, 28)])
def test_patchify_equals_stock_processor(size: tuple[int, int]) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    geometry = VisualGeometry(max_pixels=28 * 28 * 64)
    image = _frames(1, *size)[0]
    stock = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=geometry.max_pixels)(
        images=[image], return_tensors="pt"
    )
    ours, grid = patchify(normalize(to_unit_tensor(image), geometry), geometry)
    assert list(stock["image_grid_thw"][0]) == list(grid)
    assert torch.allclose(stock["pixel_values"], ours, atol=1e-5)


def test_smart_resize_equals_stock() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as stock

    for h, w in [(480, 640), (1080, 1920), (29, 1000), (100, 100), (7, 9), (2000, 300)]:
        for max_px in (28 * 28 * 16, 28 * 28 * 256, 28 * 28 * 1280):
            assert smart_resize(h, w, 28, 56 * 56, max_px) == stock(h, w, 28, 56 * 56, max_px)


def test_preprocess_errors() -> None:
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 500, 28, 56 * 56, 28 * 28 * 64)
    with pytest.raises(ValueError, match=r"RGB frames"):
        to_unit_tensor(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="share a size"):
        to_unit_tensor([np.zeros((4, 4, 3), np.uint8), np.zeros((8, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="multiple of the token size"):
        patchify(torch.zeros(2, 3, 30, 28), VisualGeometry())
    with pytest.raises(ValueError, match="min_pixels"):
        VisualGeometry(min_pixels=100, max_pixels=10)


def test_resize_keeps_range_and_size() -> None:
    x = to_unit_tensor(_frames(2, 120, 160))
    out = resize_frames(x, (56, 84))
    assert out.shape == (2, 3, 56, 84)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_tiny_model_is_a_real_checkpoint(tiny_model_dir, tiny_adapter) -> None:
    assert is_tiny_model(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    assert tiny_adapter.family == "qwen2_5_vl"
    assert tiny_adapter.hidden_size == 128
    tok = tiny_adapter.tokenizer
    for special in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|video_pad|>", "<|image_pad|>"):
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id
    assert tok.convert_tokens_to_ids("<|video_pad|>") == tiny_adapter.token_ids.video_pad
    text = "the red car enters"
    assert tok.decode(tok(text).input_ids) == text


def test_tiny_model_is_deterministic(tmp_path, tiny_model_dir) -> None:
    from safetensors.torch import load_file

    again = build_tiny_model(tmp_path / "again")
    a, b = load_file(tiny_model_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tiny_model_dir / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()


def _video_prompt(adapter, n_tokens: int) -> torch.Tensor:
    tok = adapter.tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what happened?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    return tok(text.replace("<|video_pad|>", "<|video_pad|>" * n_tokens), return_tensors="pt").input_ids


def _encode_video(adapter, n_frames: int, seed: int = 0):
    g = adapter.geometry
    size = g.target_size(120, 160)
    x = normalize(resize_frames(to_unit_tensor(_frames(n_frames, 120, 160, seed)), size), g)
    patches, grid = patchify(x, g)
    return patches, grid


def test_tiny_model_generates_from_frames(tiny_adapter) -> None:
    patches, grid = _encode_video(tiny_adapter, 4)
    n_tokens = grid[0] * grid[1] * grid[2] // 4
    ids = _video_prompt(tiny_adapter, n_tokens)
    kwargs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values_videos=patches,
        video_grid_thw=torch.tensor([grid]),
        second_per_grid_ts=torch.tensor([2.0]),
        mm_token_type_ids=(ids == tiny_adapter.token_ids.video_pad).int() * 2,
        max_new_tokens=6,
        min_new_tokens=6,
        do_sample=False,
    )
    out1 = tiny_adapter.model.generate(**kwargs)[0, ids.shape[1] :]
    out2 = tiny_adapter.model.generate(**kwargs)[0, ids.shape[1] :]
    assert out1.numel() == 6
    assert torch.equal(out1, out2)
    assert isinstance(tiny_adapter.tokenizer.decode(out1), str)


@pytest.mark.parametrize("seconds_per_step", [2.0, 1.0, 0.5])
def test_positions_equal_stock_rope_index(tiny_adapter, seconds_per_step: float) -> None:
    _patches, grid = _encode_video(tiny_adapter, 6)
    gh, gw = grid[1] // 2, grid[2] // 2
    ids = _video_prompt(tiny_adapter, grid[0] * gh * gw)
    is_video = ids[0] == tiny_adapter.token_ids.video_pad
    stock, _ = tiny_adapter.model.model.get_rope_index(
        ids,
        is_video.int().unsqueeze(0) * 2,
        video_grid_thw=torch.tensor([grid]),
        second_per_grid_ts=torch.tensor([seconds_per_step]),
    )
    start = int(is_video.nonzero()[0])
    interval = tiny_adapter.time_interval(seconds_per_step)
    ours = torch.cat([vision_positions(k, gh, gw, interval, start) for k in range(grid[0])], dim=1)
    assert torch.equal(stock[:, 0, is_video], ours)


def test_step_by_step_encoding_equals_whole_video(tiny_adapter) -> None:
    patches, grid = _encode_video(tiny_adapter, 6)
    whole = tiny_adapter.encode(patches, grid)
    per_step = patches.shape[0] // grid[0]
    steps = [
        tiny_adapter.encode(patches[k * per_step : (k + 1) * per_step], (1, grid[1], grid[2])) for k in range(grid[0])
    ]
    assert torch.allclose(whole, torch.cat(steps), atol=1e-5)


def test_qwen2_vl_family_positions(tmp_path, tiny_adapter) -> None:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = tiny_adapter.token_ids
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tiny_adapter.tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "num_heads": 1,
            "hidden_size": 64,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids.image_pad,
        video_token_id=ids.video_pad,
        vision_start_token_id=ids.vision_start,
        vision_end_token_id=ids.vision_end,
    )
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(tmp_path)
    tiny_adapter.tokenizer.save_pretrained(tmp_path)
    adapter = load_adapter(str(tmp_path), device="cpu")
    assert adapter.family == "qwen2_vl"
    assert adapter.time_interval(2.0) == 1.0
    patches, grid = _encode_video(adapter, 4)
    assert adapter.encode(patches, grid).shape == (grid[0] * grid[1] * grid[2] // 4, 64)
    gh, gw = grid[1] // 2, grid[2] // 2
    prompt = _video_prompt(adapter, grid[0] * gh * gw)
    is_video = prompt[0] == ids.video_pad
    stock, _ = adapter.model.model.get_rope_index(
        prompt, is_video.int().unsqueeze(0) * 2, video_grid_thw=torch.tensor([grid])
    )
    start = int(is_video.nonzero()[0])
    ours = torch.cat([vision_positions(k, gh, gw, 1.0, start) for k in range(grid[0])], dim=1)
    assert torch.equal(stock[:, 0, is_video], ours)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="could not load model"):
        load_adapter(str(tmp_path / "missing"))
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "textonly"
    )
    with pytest.raises(ModelLoadError, match=r"supported families: qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_vl_moe$"):
        load_adapter(str(tmp_path / "textonly"))


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_prompt_layout_of_the_adapter(tiny_adapter) -> None:
    """The layout's texts and ids: the streaming chat layout the engines have always written, token for token."""
    from types import SimpleNamespace

    from assistant.models.prompt import PromptLayout, PromptLayoutError

    layout, tok, tid = tiny_adapter.layout, tiny_adapter.tokenizer, tiny_adapter.token_ids

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    assert layout.header_ids("Be brief.") == ids("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    segment, first = layout.video_segment_ids(12.0, 3)
    stamp = ids("<12.0s>")
    assert segment == [*stamp, tid.vision_start, tid.video_pad, tid.video_pad, tid.video_pad, tid.vision_end]
    assert first == len(stamp) + 1 and segment[first] == tid.video_pad
    assert layout.image_placeholder == (tid.vision_start, tid.image_pad, tid.vision_end) and layout.image_framing == 2
    assert layout.probe_question("a car?") == "a car? Answer yes or no."
    turn = ids("\n[3.0s] Q: what?\nA: a red car\n")
    assert layout.turn_ids(3.0, "what?", " a red car ", 1000) == turn
    clipped = layout.turn_ids(3.0, "what?", " a red car ", 5)
    assert clipped == turn[:2] + turn[-3:]
    yes = {ids(w)[0] for w in ("Yes", " Yes", "yes")}
    no = {ids(w)[0] for w in ("No", " No", "no")}
    assert set(layout.yes_ids) == yes - no and set(layout.no_ids) == no - yes and layout.yes_ids
    with pytest.raises(PromptLayoutError, match="image token"):
        PromptLayout.build(tok, "llava", tid, SimpleNamespace(model_type="llava"))
    assert PromptLayout.build(tok, "llava", tid, SimpleNamespace(image_token_index=7)).image_placeholder == (7,)
