"""What the command line checks about ``--model`` before it loads anything: that it names a local checkpoint
directory, the tiny test model, or a Hugging Face id that is cached or can be downloaded now.

A hub id that is cached, on a machine that cannot reach the hub, is loaded in offline mode (no retries); one that
is not cached fails at once with one message.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from serving.cli.errors import CliError

TINY = "tiny"
HUB_PROBE_TIMEOUT_S = 3.0
"""How long the command waits to learn whether the Hugging Face hub can be reached."""


def checkpoint_config(name: str) -> dict | None:
    """The ``config.json`` of the checkpoint ``name`` names, without loading it (CliError when it cannot load).

    None for the tiny test model (built on first use) and for a hub id that will be downloaded.
    """
    if name == TINY:
        return None
    path = Path(name).expanduser()
    if path.exists():
        return _read_config(path, name)
    if _looks_like_path(name):
        raise CliError(f"--model {name!r}: no such directory (give a checkpoint directory, a Hugging Face id, 'tiny')")
    _check_repo_id(name)
    cached = _cached_config(name)
    reachable = hub_reachable()
    if cached is None and not reachable:
        raise CliError(
            f"--model {name!r} is not in the local Hugging Face cache and the hub cannot be reached from here: "
            "download it where there is network (huggingface-cli download), or pass a local directory"
        )
    if not reachable:
        go_offline()
    return None if cached is None else _read_config(cached.parent, name)


def temporal_patch(config: dict | None) -> int:
    """The checkpoint's temporal patch (frames per step at most); Qwen-VL's 2 when unknown."""
    vision = (config or {}).get("vision_config") or {}
    return int(vision.get("temporal_patch_size") or 2)


def check_frames_per_step(config: dict | None, frames_per_step: int | None) -> None:
    """CliError when ``--frames-per-step`` exceeds what the model takes."""
    patch = temporal_patch(config)
    if frames_per_step is not None and frames_per_step > patch:
        raise CliError(
            f"--frames-per-step {frames_per_step} exceeds the model's temporal patch size {patch}; "
            f"use a value from 1 to {patch}"
        )


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers a TCP connection within a few seconds (False when offline mode is set)."""
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return False
    parts = urlsplit(hub.ENDPOINT)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def go_offline() -> None:
    """Load from the local cache only, for this process and the processes it starts."""
    import huggingface_hub.constants as hub

    os.environ["HF_HUB_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE = True


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".")) or "\\" in name or name.count("/") > 1


def _check_repo_id(name: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise CliError(
            f"--model {name!r} is neither an existing directory nor a Hugging Face id (like Qwen/Qwen2-VL-2B)"
        ) from None


def _cached_config(name: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return Path(found) if isinstance(found, str) else None


def _read_config(directory: Path, name: str) -> dict:
    file = directory / "config.json"
    if not directory.is_dir() or not file.is_file():
        raise CliError(f"--model {name!r} is not a checkpoint directory (no config.json in it)")
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"--model {name!r}: its config.json cannot be read ({exc})") from None
