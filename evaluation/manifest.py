"""The run manifest: what produced the answers in an output folder, so a resume never mixes runs.

``manifest.json`` beside ``answers.jsonl`` records the model (name, resolved path, a content hash of its files),
the engine and its options, the mode, every perception / memory / session setting of the validated config, the
annotation files' hashes, the video layout and Vigil's version. A rerun into the same folder resumes only when
everything but the ``run`` section (where, when, which subset, how many at once) is the same; otherwise it stops
and names each differing setting.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
ANSWERS = "answers.jsonl"
_CHUNK = 1 << 20


class ManifestMismatch(ValueError):
    """The output folder holds answers of a run with other settings."""


def vigil_version() -> str:
    """The installed Vigil version ("unknown" when not installed as a package)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vigil")
    except PackageNotFoundError:
        return "unknown"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_cache_path() -> Path:
    home = os.environ.get("VIGIL_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "vigil")
    return Path(home) / "file_hashes.json"


def _cached_sha256(path: Path, cache: dict[str, Any]) -> str:
    """A file's SHA-256, reused while its size and modification time are unchanged."""
    real = path.resolve()
    st = real.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    entry = cache.get(str(real))
    if entry and entry[:2] == stamp:
        return entry[2]
    value = file_sha256(real)
    cache[str(real)] = [*stamp, value]
    return value


def tree_sha256(directory: str | Path) -> str:
    """One SHA-256 over every file of a folder (relative names and contents), cached per file in VIGIL_HOME."""
    root = Path(directory)
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts)
    cache_file = _hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    big = sum(p.stat().st_size for p in files) > 2**30
    if big:
        print(f"vigil eval: hashing the model files under {root} (once; cached)", file=sys.stderr)
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(root).as_posix()}\0{_cached_sha256(p, cache)}\n".encode())
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_file)
    except OSError:
        pass  # a read-only home only loses the cache
    return digest.hexdigest()


def model_fingerprint(name: str) -> dict[str, Any]:
    """The model's name, the folder it loads from and a content hash of that folder (no model is loaded)."""
    from assistant.models import TINY_MODEL_NAME

    path: Path | None = None
    if name == TINY_MODEL_NAME:
        from assistant.models.tiny import ensure_tiny_model

        path = Path(ensure_tiny_model())
    elif Path(name).is_dir():
        path = Path(name)
    else:
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(name, local_files_only=True))
        except Exception:  # not in the local cache: loading will say why
            path = None
    if path is None:
        return {"name": name, "path": None, "sha256": None}
    return {"name": name, "path": str(path.resolve()), "sha256": tree_sha256(path)}


def config_settings(config: Any) -> dict[str, Any]:
    """The settings of a validated config that decide answers: all but the server and how replicas are reached."""
    data = config.model_dump(mode="json")
    data.pop("server", None)
    remote = data.get("engine", {}).get("remote", {})
    for key in ("urls", "api_key", "timeout_s", "connect_timeout_s", "retries"):
        remote.pop(key, None)
    return data


def build_manifest(
    *,
    benchmark: str,
    annotations: Sequence[str | Path],
    videos: str | Path,
    layout: str,
    mode: str,
    config: Any,
    model: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a run; ``run`` holds what may differ between resumed parts (subset, concurrency)."""
    return {
        "vigil_version": vigil_version(),
        "benchmark": benchmark,
        "mode": mode,
        **dict(extra or {}),
        "annotations": [{"path": str(Path(p).resolve()), "sha256": file_sha256(p)} for p in annotations],
        "videos": {"layout": layout},
        "model": dict(model),
        "config": config_settings(config),
        "run": {
            "videos_root": str(Path(videos).resolve()),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **dict(run or {}),
        },
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _comparable(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for a resume: everything but ``run``, and files by hash, not by where they lie."""
    flat = _flatten({k: v for k, v in manifest.items() if k != "run"})
    flat.pop("model.path", None)
    if manifest.get("model", {}).get("sha256"):
        flat.pop("model.name", None)  # the same files under another name are the same model
    flat["annotations"] = [a.get("sha256") for a in manifest.get("annotations", [])]
    return flat


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Each differing setting as ``name (old → new)``, in a stable order."""
    a, b = _comparable(old), _comparable(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            label = "annotation file content" if key == "annotations" else key
            if key == "annotations" or key.endswith("sha256"):
                out.append(f"{label} (changed)")
            else:
                out.append(f"{label} ({a.get(key, '<unset>')} → {b.get(key, '<unset>')})")
    return out


def prepare_out_dir(
    out: str | Path, manifest: Mapping[str, Any], *, overwrite: bool = False, outputs: Iterable[str] = ()
) -> bool:
    """Make ``out`` ready for the run ``manifest`` describes; True when earlier answers are resumed.

    With ``overwrite`` the folder's manifest, answers and the named ``outputs`` are removed first. Without it, a
    folder holding answers of another run (or answers without a manifest) raises ``ManifestMismatch``.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    mpath, answers = folder / MANIFEST, folder / ANSWERS
    if overwrite:
        for name in (MANIFEST, ANSWERS, *outputs):
            target = folder / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    resumed = answers.exists() and answers.stat().st_size > 0
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"))
        except ValueError:
            raise ManifestMismatch(f"{mpath} is not valid JSON; use a new --out, or --overwrite") from None
        diff = differences(old, manifest)
        if diff and resumed:
            raise ManifestMismatch(
                f"{folder} holds answers of a run with other settings: {'; '.join(diff)}. "
                "Use a new --out, or --overwrite to discard them"
            )
        if resumed:
            merged = dict(manifest)
            merged["run"] = {**manifest["run"], "started": old.get("run", {}).get("started"), "resumed": True}
            manifest = merged
    elif resumed:
        raise ManifestMismatch(
            f"{folder} holds answers without a {MANIFEST}: what produced them is unknown. "
            "Use a new --out, or --overwrite to discard them"
        )
    tmp = mpath.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(mpath)
    return resumed


def read_manifest(out: str | Path) -> dict[str, Any]:
    """The manifest of an output folder."""
    return json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))
