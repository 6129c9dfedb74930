"""Loads transformers' Qwen2-VL and Pixtral image processor modules, and the Qwen-VL processors (Qwen3-VL's too),
without torchvision (CPU tests only).

PyPI has no CPU build of torchvision that imports beside the CPU torch, and vLLM's Qwen2-VL / Qwen2.5-VL and LLaVA
model modules import torchvision image processors of transformers at import time. In the vLLM test environment this
module is imported at interpreter start (a ``.pth`` file, so vLLM's spawned engine processes get it too) and
serves those imports from transformers' PIL image processor instead. The PIL processor computes the same
patches; only the backend differs.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

_MODELS = "transformers.models"
_ALIASES = {
    f"{_MODELS}.qwen2_vl.image_processing_qwen2_vl": (
        f"{_MODELS}.qwen2_vl.image_processing_pil_qwen2_vl",
        {"Qwen2VLImageProcessor": "Qwen2VLImageProcessorPil"},
    ),
    # vLLM's LLaVA module imports its Pixtral sibling, which imports this
    f"{_MODELS}.pixtral.image_processing_pixtral": (
        f"{_MODELS}.pixtral.image_processing_pil_pixtral",
        {"PixtralImageProcessor": "PixtralImageProcessorPil"},
    ),
}


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        source_name, renames = _ALIASES[spec.name]
        source = importlib.import_module(source_name)
        module = types.ModuleType(spec.name)
        module.__dict__.update({k: v for k, v in vars(source).items() if not k.startswith("__")})
        for alias, original in renames.items():
            setattr(module, alias, getattr(source, original))
        module.__all__ = [*getattr(source, "__all__", ()), *renames]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


_PROCESSORS = {
    "transformers.models.qwen2_vl.processing_qwen2_vl": "Qwen2VLProcessor",
    "transformers.models.qwen2_5_vl.processing_qwen2_5_vl": "Qwen2_5_VLProcessor",
    "transformers.models.qwen3_vl.processing_qwen3_vl": "Qwen3VLProcessor",
}


class _NoVideoProcessor:
    """Stands in for the torchvision video processor: takes no options, refuses videos; has the image processor's
    geometry and the stock frame-sampling defaults (vLLM's Qwen3-VL reads them to size its profiling)."""

    fps = 2.0
    min_frames = 4
    max_frames = 768

    def __init__(self, image_processor: object = None) -> None:
        from transformers.processing_utils import VideosKwargs

        self.valid_kwargs = VideosKwargs
        for name in ("size", "patch_size", "merge_size", "temporal_patch_size", "image_mean", "image_std"):
            if hasattr(image_processor, name):
                setattr(self, name, getattr(image_processor, name))

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("videos need torchvision, which this CPU test environment does not have")


def _without_video(cls: type) -> None:
    """The processor loads no video processor (vLLM then handles images only)."""
    names = [a for a in cls.get_attributes() if a != "video_processor"]  # read before __init__ is wrapped
    init = cls.__init__

    def get_attributes(inner: type) -> list[str]:
        return list(names)

    def __init__(self: object, *args: object, **kwargs: object) -> None:
        kwargs.update(zip(names, args, strict=False))  # sub-processors arrive in get_attributes order
        kwargs.pop("video_processor", None)
        init(self, *args[len(names) :], **kwargs)
        self.video_processor = _NoVideoProcessor(getattr(self, "image_processor", None))

    cls.get_attributes = classmethod(get_attributes)
    cls.__init__ = __init__


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, class_name: str) -> None:
        self._loader, self._class_name = loader, class_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        _without_video(getattr(module, self._class_name))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in _ALIASES:
            return importlib.util.spec_from_loader(fullname, _Loader())
        if fullname in _PROCESSORS:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None and spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, _PROCESSORS[fullname])
                    return spec
        return None


def _torchvision_importable() -> bool:
    try:
        return importlib.util.find_spec("torchvision") is not None
    except (ImportError, ValueError):
        return False


if not _torchvision_importable() and not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
