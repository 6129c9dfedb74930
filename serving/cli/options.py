"""Argument builders shared by ``vigil`` commands, and the config tree they describe.

Commands registered from other packages (``vigil.commands`` entry points) import these to offer the same
options with the same defaults and checks.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from serving.cli.errors import CliError
from serving.runtime import SetupError

if TYPE_CHECKING:
    from assistant.config import VigilConfig

DTYPES = ["auto", "float32", "bfloat16", "float16"]


EXTRAS = {"serve": ("fastapi", "uvicorn", "prometheus_client", "multipart"), "demo": ("gradio",)}
"""The modules each optional extra of the package brings."""


def require_extra(command: str, extra: str) -> None:
    """CliError naming the extra to install when a module of ``extra`` is missing (checked without importing)."""
    import importlib.util

    missing = []
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise CliError(
            f"vigil {command} needs the {extra} extra ({', '.join(missing)} missing): pip install 'vigil[{extra}]'"
        )


def check_remote(config: VigilConfig) -> None:
    """CliError when no remote replica of the remote engine accepts a connection (a warning for each one down)."""
    import socket
    import sys
    from urllib.parse import urlsplit

    if config.engine.kind != "remote":
        return
    down = []
    for url in config.engine.remote.urls:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=config.engine.remote.connect_timeout_s):
                pass
        except OSError as exc:
            down.append(f"{url} ({exc.strerror or exc})")
    if len(down) == len(config.engine.remote.urls):
        raise CliError(f"no remote replica can be reached: {'; '.join(down)}; start `vllm serve` or fix --remote-url")
    for replica in down:
        print(f"vigil: warning: remote replica {replica} cannot be reached; using the others", file=sys.stderr)


def add_config_arg(p: argparse.ArgumentParser) -> None:
    """``--config FILE``: settings from a YAML, TOML or JSON file (under ``VIGIL_*`` variables and the options)."""
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="settings from a YAML, TOML or JSON file shaped like the config tree (docs/configuration.md); "
        "VIGIL_* environment variables (VIGIL_ENGINE__MAX_NEW_TOKENS=64) override it, options override both",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the settings in effect as JSON (keys hidden) and exit"
    )


def add_model_args(p: argparse.ArgumentParser, default: str | None = "tiny") -> None:
    """``--config``, ``--model``, ``--device``, ``--dtype`` and the frame pixel limits.

    With ``default=None`` the command runs without a model unless one is given (and drops by pixels).
    """
    add_config_arg(p)
    fallback = f"default {default}" if default else "default: none, drop by pixels"
    p.add_argument("--model", default=None, help=f"Hugging Face id, local checkpoint directory, or 'tiny' ({fallback})")
    p.set_defaults(model_optional=default is None)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="weights dtype (default auto)")
    p.add_argument("--max-pixels", type=int, default=None, help="largest resized frame area in pixels")
    p.add_argument("--min-pixels", type=int, default=None, help="smallest resized frame area in pixels")


def add_bench_model_args(p: argparse.ArgumentParser, *, arch: bool = False) -> None:
    """The model a benchmark runs: ``--model`` (and with ``arch`` a random-weight ``--arch``), device, dtype."""
    if arch:
        p.add_argument("--model", default="tiny", help="checkpoint (ignored with --arch)")
        p.add_argument(
            "--arch",
            default=None,
            help="real-size random-weight architecture, e.g. qwen2.5-vl-7b, qwen3-vl-8b (all: docs/engines.md)",
        )
    else:
        p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=DTYPES)


def add_perception_args(p: argparse.ArgumentParser) -> None:
    """Sampling and differential token drop options."""
    p.add_argument("--fps", type=float, default=None, help="frames sampled per second of video (default 1)")
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
        default=None,
        help="compare with the last kept value at each position (default) or the previous step",
    )


def add_memory_args(p: argparse.ArgumentParser) -> None:
    """Memory budget, policy, archive and recall, answer length, KV cap, and the reaction engine options."""
    p.add_argument("--budget", type=int, default=None, help="visual tokens the memory may hold (default 8192)")
    p.add_argument(
        "--policy",
        choices=["sink_window", "redundancy", "round_pool"],
        default=None,
        help="what to do when the memory budget is reached (default sink_window)",
    )
    p.add_argument(
        "--archive",
        choices=["none", "memory", "disk", "redis"],
        default=None,
        help="where evicted memory goes (default: in-process memory)",
    )
    p.add_argument("--archive-dir", default=None, help="directory of the disk archive")
    p.add_argument("--redis-url", default=None, help="Redis URL for the redis archive")
    p.add_argument("--recall", type=int, default=None, help="archived entries brought back per question (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="longest answer in tokens (default 128)")
    p.add_argument("--kv-cap", type=int, default=None, help="hard KV cap in tokens (default budget + 4096)")
    add_engine_args(p)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """The ``reaction engine`` option group: kind, vLLM and remote replica options."""
    g = p.add_argument_group("reaction engine")
    g.add_argument(
        "--engine",
        choices=["hf", "vllm", "remote"],
        default=None,
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
    g.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
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
    g.add_argument(
        "--metrics-open", action="store_true", default=None, help="serve /metrics without an API key (for scrapers)"
    )


def build_config(args: argparse.Namespace) -> VigilConfig:
    """The validated config tree: the options given, over ``VIGIL_*`` variables, over ``--config FILE``.

    The model is checked first (an existing directory, or a Hugging Face id that is cached or can be downloaded
    now), and so is ``--frames-per-step`` against it: a mistake is reported before anything loads.
    """
    from pydantic import ValidationError

    from assistant.config import format_validation_error, load_config

    sections = config_sections(args)
    try:
        config = load_config(sections, getattr(args, "config", None))
    except ValidationError as exc:
        raise SetupError(f"invalid options: {format_validation_error(exc)}") from None
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    if not (getattr(args, "model_optional", False) and not args.model):
        from serving.cli.model_check import check_frames_per_step, checkpoint_config

        check_frames_per_step(checkpoint_config(config.model.name), config.perception.frames_per_step)
    if getattr(args, "print_config", False):
        print(json.dumps(shown_config(config), indent=2))
        raise SystemExit(0)
    check_remote(config)
    return config


def shown_config(config: VigilConfig) -> dict[str, Any]:
    """The config tree as JSON data, its secrets hidden."""
    data = config.model_dump(mode="json")
    data["server"]["api_keys"] = ["***"] * len(data["server"]["api_keys"])
    if data["engine"]["remote"]["api_key"]:
        data["engine"]["remote"]["api_key"] = "***"
    return data


def config_sections(args: argparse.Namespace) -> dict[str, Any]:
    """The config sections the command line sets (only the options given)."""
    drop = {"mode": args.drop_mode, "threshold": args.drop_threshold, "drop_ratio": args.drop_ratio}
    drop["reference"] = args.drop_reference
    if args.drop_mode is None and getattr(args, "model_optional", False) and not args.model:
        drop["mode"] = "pixel"  # no model: nothing to compare features with
    model = {
        "name": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "max_pixels": args.max_pixels,
        "min_pixels": args.min_pixels,
    }
    perception = {"fps": args.fps, "frames_per_step": args.frames_per_step, "drop": _given(drop)}
    sections: dict[str, Any] = {"model": _given(model), "perception": _given(perception)}
    if hasattr(args, "budget"):
        if args.redis_url and args.archive is None:
            args.archive = "redis"
        sections["memory"] = _given(
            {
                "budget_tokens": args.budget,
                "policy": args.policy,
                "archive": args.archive,
                "archive_dir": args.archive_dir,
                "redis_url": args.redis_url,
                "recall": args.recall,
            }
        )
        sections["engine"] = engine_section(args)
    if hasattr(args, "host") and hasattr(args, "allow_video"):
        sections["server"] = server_section(args)
    return {name: section for name, section in sections.items() if section}


def _given(section: dict[str, Any]) -> dict[str, Any]:
    """The entries of a section the command line gave (None: not given; empty nested sections left out)."""
    return {k: v for k, v in section.items() if v is not None and v != {}}


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
    kv_cap = args.kv_cap or (args.budget + 4096 if args.budget else None)
    return _given(
        {
            "kind": args.engine,
            "max_new_tokens": args.max_new_tokens,
            "kv_cap_tokens": kv_cap,
            "vllm": _given(vllm),
            "remote": {k: v for k, v in remote.items() if v},
        }
    )


def server_section(args: argparse.Namespace) -> dict[str, Any]:
    """The ``server`` config section from command-line arguments and ``VIGIL_API_KEYS`` (comma-separated)."""
    keys = list(args.api_key) + [k.strip() for k in os.environ.get("VIGIL_API_KEYS", "").split(",") if k.strip()]
    limits = {"max_sessions_per_key": args.max_sessions_per_key, "max_fps": args.max_fps}
    return _given(
        {
            "host": args.host,
            "port": args.port,
            "api_keys": keys or None,
            "redis_url": args.redis_url,
            "worker_id": args.worker_id,
            "public_url": args.public_url,
            "video_allow": args.allow_video or None,
            "ui": True if getattr(args, "ui", False) else None,
            "metrics_open": args.metrics_open,
            "limits": _given(limits),
        }
    )


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
