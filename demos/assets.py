"""The page's static files (JavaScript in demos/static), shipped as package data beside the code."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def asset(name: str) -> str:
    """The text of ``demos/static/<name>``."""
    return files("demos").joinpath("static", name).read_text(encoding="utf-8")


def camera_js(banner_style: str) -> str:
    """The page-load script that shows the camera banner (in ``banner_style``) when the webcam cannot be used."""
    return asset("camera.js").replace("__BANNER_STYLE__", banner_style)
