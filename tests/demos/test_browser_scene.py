"""At the default settings (1 fps, two frames per step) the app's chat reports the camera's hard cuts by itself."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.config import VigilConfig

from .conftest import RunningApp
from .test_browser import CHROMIUM, chrome, start_camera, tab_session, text_of, wait

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def default_app(tiny_adapter, app_server, app_stopper) -> Iterator[RunningApp]:
    config = VigilConfig(engine={"max_new_tokens": 16})  # perception, memory and proactive at their defaults
    assert config.perception.fps == 1.0 and config.perception.frames_per_step is None
    running = app_server(tiny_adapter, config)
    yield running
    app_stopper(running)


def test_scene_change_messages_at_the_default_settings(default_app: RunningApp, camera_y4m: Path) -> None:
    app = default_app
    driver = chrome(camera_y4m)  # Chromium loops the clip: a hard cut at 4 s and one at 7 s of every loop
    try:
        driver.get(app.url)
        wait(driver, lambda d: "Session started" in text_of(d, "vigil-chat"), 60, "the tab got no session")
        ui = wait(driver, lambda d: tab_session(app, set()), 10, "no session for the tab")
        assert ui.live.session.perception.frames_per_step == 2  # the model's temporal patch: the default
        start_camera(driver)
        wait(
            driver,
            lambda d: text_of(d, "vigil-chat").count("Scene change") >= 2,
            60,
            "fewer than two scene-change messages at the default settings",
        )
        scenes = [m for m in ui.messages if m.kind == "scene"]
        assert not [m for m in ui.messages if m.role == "user"]  # nobody typed anything
        for scene in scenes:
            assert f"{scene.t:.1f} s" in text_of(driver, "vigil-chat")  # each shown with its stream time
        # no flood: the looped clip has two cuts per 7 s, the detector a cooldown between triggers
        stream_s = ui.live.stream_t
        assert len(scenes) <= 2 * (stream_s / 7.0) + 2, (len(scenes), stream_s)
        cooldown = app.orchestrator.config.proactive.scene.cooldown_s
        assert all(b.t - a.t >= cooldown for a, b in itertools.pairwise(scenes))
    finally:
        driver.quit()
