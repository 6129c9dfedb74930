"""Argument builders shared by ``vigil`` commands, and the config tree they describe.

Commands registered from other packages (``vigil.commands`` entry points) import these to offer the same
options with the same defaults and checks.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from serving.runtime import SetupError, validated_config

if TYPE_CHECKING:
    from assistant.config import VigilConfig

DTYPES = ["auto", "float32", "bfloat16", "float16"]


class CliError(SetupError):
    """A user-facing error in the command line: printed as one line, exit code 2."""


def add_model_args(p: argparse.ArgumentParser, default: str | None = "tiny") -> None:
    """``--model``, ``--device``, ``--dtype`` and the frame pixel limits."""
    p.add_argument("--model", default=default, help="Hugging Face id, local checkpoint directory, or 'tiny'")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--max-pixels", type=int, default=None, help="largest resized frame area in pixels")
    p.add_argument("--min-pixels", type=int, default=None, help="smallest resized frame area in pixels")


def add_bench_model_args(p: argparse.ArgumentParser, *, arch: bool = False) -> None:
    """The model a benchmark runs: ``--model`` (and with ``arch`` a random-weight ``--arch``), device, dtype."""
    if arch:
        p.add_argument("--model", default="tiny", help="checkpoint (ignored with --arch)")
        p.add_argument(
            "--arch", default=None, help="real-size random-weight architecture: qwen2.5-vl-3b, qwen2.5-vl-7b"
        )
    else:
        p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=DTYPES)


def add_perception_args(p: argparse.ArgumentParser) -> None:
    """Sampling and differential token drop options."""
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of video (default 1)")
    p.add_argument("--frames-per-step", type=int, default=None, help="sampled frames per temporal step (1 or 2)")
    p.add_argument(
        "--drop-mode",
        choices=["pixel", "feature"],
        default=None,
        help="differential token drop mode (default: feature with a model, pixel without)",
    )
    p.add_argument(
        "--drop-threshold",
        type=float,
        default=None,
        help="feature: drop when cosine similarity > T; pixel: drop when mean |diff| < T",
    )
    p.add_argument("--drop-ratio", type=float, default=None, help="budget mode: drop this share of each step")
    p.add_argument(
        "--drop-reference",
        choices=["last_kept", "previous"],
        default="last_kept",
        help="compare with the last kept value at each position (default) or the previous step",
    )


def add_memory_args(p: argparse.ArgumentParser) -> None:
    """Memory budget, policy, archive and recall, answer length, KV cap, and the reaction engine options."""
    p.add_argument("--budget", type=int, default=8192, help="visual tokens the memory may hold (default 8192)")
    p.add_argument(
        "--policy",
        choices=["sink_window", "redundancy", "round_pool"],
        default="sink_window",
        help="what to do when the memory budget is reached",
    )
    p.add_argument(
        "--archive",
        choices=["none", "memory", "disk", "redis"],
        default="memory",
        help="where evicted memory goes (default: in-process)",
    )
    p.add_argument("--archive-dir", default=None, help="directory of the disk archive")
    p.add_argument("--redis-url", default=None, help="Redis URL for the redis archive")
    p.add_argument("--recall", type=int, default=0, help="archived entries brought back per question")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--kv-cap", type=int, default=None, help="hard KV cap in tokens (default budget + 4096)")
    add_engine_args(p)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """The ``reaction engine`` option group: kind, vLLM and remote replica options."""
    g = p.add_argument_group("reaction engine")
    g.add_argument(
        "--engine",
        choices=["hf", "vllm", "remote"],
        default="hf",
        help="transformers in-process (default), vLLM in-process, or OpenAI-compatible vLLM replicas",
    )
    g.add_argument("--tensor-parallel-size", type=int, default=None, help="vllm: GPUs per model")
    g.add_argument("--gpu-memory-utilization", type=float, default=None, help="vllm: share of GPU memory")
    g.add_argument("--max-model-len", type=int, default=None, help="vllm: context length")
    g.add_argument(
        "--enforce-eager", action="store_true", default=None, help="vllm: no CUDA graphs or compilation (faster start)"
    )
    g.add_argument(
        "--visual-input",
        choices=["kept", "embeds", "frames"],
        default=None,
        help="vllm/remote: kept tokens only (Vigil's vLLM plugin; default, Qwen-VL), kept embeddings as whole "
        "grids (stock vLLM), or kept raw frames encoded by vLLM (any VLM)",
    )
    g.add_argument(
        "--remote-url",
        action="append",
        default=[],
        metavar="URL",
        help="remote: base URL of a `vllm serve` replica, e.g. http://gpu1:8000/v1 (repeatable)",
    )
    g.add_argument("--remote-model", default=None, help="remote: served model name (default: --model)")
    g.add_argument("--remote-api-key", default=None, help="remote: bearer key of the replicas")


def add_server_args(p: argparse.ArgumentParser) -> None:
    """The ``server`` option group: listen address, API keys, workers, video allow-list, limits."""
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept this bearer key (repeatable; also VIGIL_API_KEYS, comma-separated); none = open",
    )
    g.add_argument("--worker-id", default=None, help="this worker's name in the Redis session directory")
    g.add_argument("--public-url", default=None, help="URL other workers redirect to for this worker's sessions")
    g.add_argument(
        "--allow-video",
        action="append",
        default=[],
        metavar="PREFIX",
        help="path or URL prefix clients may ask the server to play (repeatable)",
    )
    g.add_argument("--max-sessions-per-key", type=int, default=None)
    g.add_argument("--max-fps", type=float, default=None, help="frames per second one session may receive")


def build_config(args: argparse.Namespace) -> VigilConfig:
    """The validated config tree from command-line arguments (SetupError with every problem listed)."""
    mode = args.drop_mode or ("feature" if getattr(args, "model", None) else "pixel")
    drop = {
        "mode": mode,
        "threshold": args.drop_threshold,
        "drop_ratio": args.drop_ratio,
        "reference": args.drop_reference,
    }
    model = {
        "name": args.model or "tiny",
        "device": args.device,
        "dtype": args.dtype,
        "max_pixels": args.max_pixels,
        "min_pixels": args.min_pixels,
    }
    perception = {"fps": args.fps, "frames_per_step": args.frames_per_step, "drop": drop}
    sections: dict[str, Any] = {"model": model, "perception": perception}
    if hasattr(args, "budget"):
        sections["memory"] = {
            "budget_tokens": args.budget,
            "policy": args.policy,
            "archive": args.archive,
            "archive_dir": args.archive_dir,
            "redis_url": args.redis_url,
            "recall": args.recall,
        }
        sections["engine"] = engine_section(args)
    return validated_config(**sections)


def engine_section(args: argparse.Namespace) -> dict[str, Any]:
    """The ``engine`` config section from command-line arguments."""
    vllm = {
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
        "visual_input": args.visual_input,
        "enforce_eager": args.enforce_eager,
    }
    remote = {"urls": args.remote_url, "served_model": args.remote_model, "api_key": args.remote_api_key}
    return {
        "kind": args.engine,
        "max_new_tokens": args.max_new_tokens,
        "kv_cap_tokens": args.kv_cap or args.budget + 4096,
        "vllm": {k: v for k, v in vllm.items() if v is not None},
        "remote": {k: v for k, v in remote.items() if v},
    }


def server_section(args: argparse.Namespace) -> dict[str, Any]:
    """The ``server`` config section from command-line arguments and the environment (``VIGIL_API_KEYS``)."""
    keys = list(args.api_key) + [k.strip() for k in os.environ.get("VIGIL_API_KEYS", "").split(",") if k.strip()]
    limits = {"max_sessions_per_key": args.max_sessions_per_key, "max_fps": args.max_fps}
    return {
        "host": args.host,
        "port": args.port,
        "api_keys": keys,
        "redis_url": args.redis_url,
        "worker_id": args.worker_id,
        "public_url": args.public_url,
        "video_allow": args.allow_video,
        "ui": bool(getattr(args, "ui", False)),
        "limits": {k: v for k, v in limits.items() if v is not None},
    }


def add_speed_arg(p: argparse.ArgumentParser) -> None:
    """``--speed``: how fast a video file is played."""
    p.add_argument("--speed", default="max", help="'max' (as fast as possible), 'realtime', or a speed factor")


def parse_speed(value: str) -> str | float:
    """``--speed`` as a pace: 'max', 'realtime' or a positive factor (CliError otherwise)."""
    if value in ("max", "realtime"):
        return value
    try:
        speed = float(value)
    except ValueError:
        raise CliError(f"--speed must be 'max', 'realtime' or a positive number, got {value!r}") from None
    if speed <= 0:
        raise CliError(f"--speed must be positive, got {value}")
    return speed
