"""Shared vLLM engines for the vLLM tests (engine start takes 15-30 s on CPU, so one of each per test run).

Everything here runs only where vLLM is installed (the ``.ci/vllm`` environment); the test modules skip
otherwise. vLLM's engines are bound to the event loop that first uses them, so the tests drive them on one
loop running in a background thread (``run``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SERVED_NAME = "tiny-served"


class LoopThread:
    """An event loop in a background thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 300.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def loop_thread() -> LoopThread:
    runner = LoopThread()
    yield runner
    runner.stop()


@pytest.fixture(scope="session")
def vllm_qwen(tiny_adapter, loop_thread):
    """The in-process vLLM engine on the tiny Qwen2.5-VL, fed precomputed embeddings."""
    from assistant.config import EngineConfig
    from serving.engines.vllm import VLLMEngine

    config = EngineConfig(
        kind="vllm",
        max_new_tokens=12,
        kv_cap_tokens=10240,
        vllm={"visual_input": "embeds", "max_model_len": 16384, "compaction_every": 4},
    )
    engine = VLLMEngine(tiny_adapter, config, enforce_eager=True)
    yield engine
    loop_thread.run(engine.shutdown())


@pytest.fixture(scope="session")
def vllm_kept(tiny_adapter, loop_thread):
    """The in-process vLLM engine on the tiny Qwen2.5-VL with kept-token items (Vigil's plugin model)."""
    from assistant.config import EngineConfig
    from serving.engines.vllm import VLLMEngine

    config = EngineConfig(
        kind="vllm",
        max_new_tokens=12,
        kv_cap_tokens=10240,
        vllm={"visual_input": "kept", "max_model_len": 16384, "compaction_every": 4},
    )
    engine = VLLMEngine(tiny_adapter, config, enforce_eager=True)
    yield engine
    loop_thread.run(engine.shutdown())


def build_tiny_llava(directory: Path, seed: int = 0) -> Path:
    """A deterministic tiny LLaVA (CLIP tower, Llama text model, PIL-only image processor) saved to ``directory``."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from assistant.models.tiny_tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]}, replace_extra_special_tokens=False)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 56,
            "patch_size": 14,
            "projection_dim": 64,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "max_position_embeddings": 16384,
            "bos_token_id": pad,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "tie_word_embeddings": False,
        },
        image_token_index=image_token,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, do_sample=False)
    model.save_pretrained(directory)
    _classic_llava_layout(directory / "model.safetensors")
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, do_center_crop=True
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    processor.save_pretrained(directory)
    return directory


def _classic_llava_layout(path: Path) -> None:
    """Rename the CLIP tower's weights to the published LLaVA layout (``vision_tower.vision_model.*``) that
    vLLM's loader expects; transformers reads both."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    renamed = {
        ("vision_tower.vision_model." + k[len("vision_tower.") :] if k.startswith("vision_tower.") else k): v
        for k, v in tensors.items()
    }
    save_file(renamed, path, metadata={"format": "pt"})


@pytest.fixture(scope="session")
def tiny_llava_dir(vigil_home: Path) -> Path:
    return build_tiny_llava(vigil_home / "models" / "tiny-llava")


@pytest.fixture(scope="session")
def llava_adapter(tiny_llava_dir: Path):
    """What the engines need of a checkpoint they feed raw frames: name, tokenizer, config, dtype."""
    import torch
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    from assistant.models.base import VisionTokenIds
    from assistant.models.preprocess import VisualGeometry
    from assistant.models.prompt import PromptLayout

    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llava_dir)
    image = int(model.config.image_token_index)
    token_ids = VisionTokenIds(vision_start=image, vision_end=image, image_pad=image, video_pad=image)
    return SimpleNamespace(
        family="llava",
        layout=PromptLayout.build(tokenizer, "llava", token_ids, model.config),
        name=str(tiny_llava_dir),
        model=model,
        tokenizer=tokenizer,
        geometry=VisualGeometry(patch_size=14, merge_size=1),
        token_ids=token_ids,
        dtype=torch.float32,
        device=torch.device("cpu"),
        hidden_size=128,
    )


@pytest.fixture(scope="session")
def vllm_llava(llava_adapter, loop_thread):
    """The in-process vLLM engine on the tiny LLaVA, fed raw frames (vLLM runs the CLIP tower)."""
    from assistant.config import EngineConfig
    from serving.engines.vllm import VLLMEngine

    config = EngineConfig(
        kind="vllm", max_new_tokens=12, kv_cap_tokens=8192, vllm={"visual_input": "frames", "max_model_len": 12288}
    )
    engine = VLLMEngine(llava_adapter, config, enforce_eager=True)
    yield engine
    loop_thread.run(engine.shutdown())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real ``vllm serve`` of the tiny Qwen2.5-VL on loopback (stopped by its process group id), pointed at
    Vigil's kept-token model (loaded through the plugin entry point; whole-grid items work on it as on stock vLLM)."""
    yield from _vllm_serve(tiny_model_dir, "qwen2_5_vl", tmp_path_factory)


@pytest.fixture(scope="session")
def vllm_server_qwen3(vigil_home: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real ``vllm serve`` of the tiny Qwen3-VL on loopback, pointed at Vigil's kept-token Qwen3-VL model."""
    from assistant.models.tiny import ensure_tiny_model

    yield from _vllm_serve(ensure_tiny_model(family="qwen3-vl"), "qwen3_vl", tmp_path_factory)


def _vllm_serve(model_dir: Path, family: str, tmp_path_factory: pytest.TempPathFactory):
    """Start ``vllm serve`` of ``model_dir`` with the kept-token model of ``family``; yield its /v1 URL; stop it."""
    from serving.engines.vllm_plugin import hf_overrides

    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    # the OpenAI server of `vllm serve`, started through its module: the `vllm` command looks up the
    # distribution named "vllm", which the CPU build (distributed as "vllm-cpu") does not have
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", SERVED_NAME,
        "--dtype", "float32", "--max-model-len", "16384", "--enforce-eager", "--seed", "0",
        "--enable-prefix-caching", "--enable-mm-embeds", "--skip-mm-profiling",
        "--enable-prompt-tokens-details",
        "--limit-mm-per-prompt", json.dumps({"image": 4096, "video": 0}),
        "--hf-overrides", json.dumps(hf_overrides(family)),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve did not come up in 240 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield f"{url}/v1"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
