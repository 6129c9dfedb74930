"""Qwen3-VL through the product: ``vigil make-tiny-model --family``, and a checkpoint built with stock transformers
classes alone (not Vigil's builder) watched and answered by ``vigil watch``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_make_tiny_model_family(tmp_path, vigil_home) -> None:
    from assistant.models.tiny import TINY_FAMILIES
    from serving.cli.make import TINY_FAMILIES as CLI_FAMILIES

    assert CLI_FAMILIES == TINY_FAMILIES
    out = vigil("make-tiny-model", str(tmp_path / "moe"), "--family", "qwen3-vl-moe")
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "moe" / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl_moe"
    bad = vigil("make-tiny-model", str(tmp_path / "x"), "--family", "qwen9")
    assert bad.returncode == 2 and "invalid choice: 'qwen9'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()


def _stock_checkpoint(directory: Path, tokenizer_dir: Path) -> Path:
    """A Qwen3-VL checkpoint of other sizes than Vigil's tiny one, written by stock classes only."""
    import torch
    from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>")}
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 96,
            "intermediate_size": 192,
            "num_hidden_layers": 3,
            "num_attention_heads": 3,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [8, 4, 4],
                "mrope_interleaved": True,
            },
        },
        vision_config={
            "depth": 3,
            "hidden_size": 48,
            "intermediate_size": 96,
            "num_heads": 2,
            "out_hidden_size": 96,
            "num_position_embeddings": 144,
            "deepstack_visual_indexes": [0, 1, 2],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    torch.manual_seed(3)
    Qwen3VLForConditionalGeneration(config).save_pretrained(directory)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        size={"shortest_edge": 64 * 64, "longest_edge": 32 * 32 * 48},
    )  # fmt: skip
    # what Qwen3VLProcessor.save_pretrained writes, less its video processor (which needs torchvision, absent here)
    image_processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.slow
def test_a_stock_built_qwen3_vl_checkpoint_is_watched_and_answered(tmp_path, tiny_model_dir, real_clips) -> None:
    checkpoint = _stock_checkpoint(tmp_path / "stock-qwen3-vl", tiny_model_dir)
    assert not (checkpoint / "VIGIL_TINY_MODEL").exists()
    out = vigil(
        "watch", str(real_clips["bikes"]), "--model", str(checkpoint), "--fps", "2",
        "--ask", "1.5:What is moving?", "--ask", "3:And now?", "--jsonl", "--max-new-tokens", "6",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    answers = [e for e in events if e.get("type") == "answer"]
    assert sorted(a["t"] for a in answers) == [1.5, 3.0]
    assert all(isinstance(a["answer"], str) and a["cached_tokens"] > 0 for a in answers)
    summary = events[-1]["summary"]
    assert summary["frames"] > 0 and summary["memory_tokens"] <= summary["memory_budget"]


def test_vllm_overrides_and_visual_inputs_for_qwen3(vigil_home) -> None:
    """What the vLLM and remote engines are told for Qwen3-VL (no vLLM needed): the kept-token architectures, the
    MoE config value vLLM 0.32 reads, and whole-grid embeds refused (they would lose DeepStack)."""
    from assistant.config import EngineConfig
    from assistant.models import load_adapter
    from serving.engines._context import SegmentContext
    from serving.engines.vllm_plugin import hf_overrides

    assert hf_overrides("qwen3_vl") == {"architectures": ["VigilKeptQwen3VLForConditionalGeneration"]}
    assert hf_overrides("qwen3_vl_moe") == {
        "architectures": ["VigilKeptQwen3VLMoeForConditionalGeneration"],
        "text_config": {"norm_topk_prob": True},
    }
    adapter = load_adapter("tiny-qwen3-vl", device="cpu")
    kept = SegmentContext(adapter, EngineConfig(kind="vllm"), "kept")
    assert kept.layout.stamp_text(2.0) == "<2.0 seconds>"
    with pytest.raises(ValueError, match=r"DeepStack features .* use visual_input 'kept'"):
        SegmentContext(adapter, EngineConfig(kind="vllm"), "embeds")


def test_the_remote_engine_sends_deepstack_rows_of_kept_tokens(vigil_home, real_clips) -> None:
    """A real clip (drop on) through the remote engine on Qwen3-VL: each part carries the entry's kept rows whole
    (embedding and DeepStack levels), its kept count and offsets; the texts are Qwen3-VL's timestamps."""
    import asyncio

    import torch

    from assistant.config import VigilConfig
    from assistant.models import load_adapter
    from assistant.reaction import AnswerRequest
    from assistant.session import Session
    from assistant.sources.files import VideoFileSource
    from serving.engines.remote import RemoteEngine
    from tests.serving.test_remote_engine import FakeReplica, _decode_tensor
    from tests.support import collect_answer

    adapter = load_adapter("tiny-qwen3-vl", device="cpu")
    replica = FakeReplica().start()
    served = "tiny-served"  # the fake replica's model name
    config = VigilConfig(
        perception={"fps": 2.0, "drop": {"mode": "feature", "drop_ratio": 0.5}},
        memory={"budget_tokens": 4096, "archive": "none"},
        engine={"kind": "remote", "max_new_tokens": 4, "remote": {"urls": [replica.url], "served_model": served}},
    )

    async def run():
        engine = RemoteEngine(adapter, config.engine)
        session = Session("r", config, adapter, engine)
        await session.start()
        for frame in VideoFileSource(real_clips["bikes"], fps=2.0, end=3.0):
            session.ingest(frame)
        _, done = await collect_answer(engine.answer("r", AnswerRequest("what now?", 3.0)))
        await engine.shutdown()
        return session.memory.entries, done

    try:
        entries, done = asyncio.run(run())
    finally:
        replica.stop()
    content = replica.requests[-1]["messages"][1]["content"]
    parts = [p["image_embeds"] for p in content if p["type"] == "image_embeds"]
    assert done.text and len(parts) == len(entries) == 3
    for payload, entry in zip(parts, entries, strict=True):
        rows = _decode_tensor(payload["image_embeds"])  # [K, 3D]
        assert rows.shape == (entry.num_tokens, 3 * adapter.hidden_size) and torch.equal(rows, entry.embeddings)
        assert payload["image_num_tokens"] == [entry.num_tokens]
    stamps = [p["text"] for p in content if p["type"] == "text"][: len(entries)]
    assert stamps == [f"<{e.t_start:.1f} seconds>" for e in entries]
