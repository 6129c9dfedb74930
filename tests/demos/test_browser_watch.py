"""The file tab in a real browser: the uploaded video plays on the page in step with the stream clock (which starts
at Play), "where Vigil looks" is drawn over the frames, and the settings keep their defaults when left empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from .conftest import RunningApp, app_config
from .test_browser import CHROMEDRIVER, CHROMIUM, text_of, wait

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def write_webm(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """RGB frames as a VP8 WebM file (a codec every Chromium build plays)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 800_000
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def chrome_without_camera():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1500", "--lang=en-US"):
        options.add_argument(arg)
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def watch_app(tiny_adapter, app_server, app_stopper) -> Iterator[RunningApp]:
    running = app_server(tiny_adapter, app_config())
    yield running
    app_stopper(running)


VIDEO_STATE_JS = """
const v = document.querySelector('#vigil-watched video');
return v ? {t: v.currentTime, paused: v.paused, ready: v.readyState, src: v.currentSrc} : null;
"""


def test_a_played_file_is_shown_in_step_with_the_overlay(
    watch_app: RunningApp, camera_frames, tmp_path, artifact_saver
) -> None:
    from selenium.webdriver.common.by import By

    app = watch_app
    clip = write_webm(camera_frames, tmp_path / "street.webm", 10)  # 7 s: a quiet scene, then traffic
    driver = chrome_without_camera()
    try:
        driver.get(app.url)
        wait(driver, lambda d: "Session started" in text_of(d, "vigil-chat"), 60, "the tab got no session")
        ui = next(iter(app.registry.sessions.values()))
        file_tab = next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "file" in b.text)
        file_tab.click()

        # no camera banner while the file tab is open (this browser has no camera at all)
        def camera_banner_shown(d) -> bool:
            found = d.find_elements(By.ID, "vigil-camera-banner")
            return bool(found and found[0].is_displayed())

        wait(driver, lambda d: not camera_banner_shown(d), 5, "a camera banner is shown on the file tab")

        driver.find_element(By.CSS_SELECTOR, "#vigil-upload input[type=file]").send_keys(str(clip))
        wait(driver, lambda d: ".webm" in text_of(d, "vigil-upload"), 30, "the upload did not finish")
        assert not camera_banner_shown(driver)
        driver.find_element(By.ID, "vigil-play").click()
        wait(driver, lambda d: ui.watching is not None, 20, "the file did not start playing")
        assert ui.play_offset == 0.0  # the stream clock starts at Play: the file's time is the stream's time
        wait(driver, lambda d: "0.0 s" in text_of(d, "vigil-chat"), 20, "the Play note is not at 0.0 s")

        # the video element plays the file, and stays near the stream's position
        state = wait(
            driver,
            lambda d: (s := d.execute_script(VIDEO_STATE_JS)) and s["t"] > 1.5 and not s["paused"] and s,
            40,
            "the watched video is not playing",
        )
        assert state["src"] and state["ready"] >= 2
        server_t = ui.watch_position()
        page_t = driver.execute_script(VIDEO_STATE_JS)["t"]
        assert server_t is not None and abs(page_t - server_t) < 3.0, (page_t, server_t)

        # "where Vigil looks": the newest step's kept tokens over its frame, with the drop ratio
        wait(
            driver,
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "#vigil-looks img")
                and "drop ratio" in text_of(d, "vigil-looks-caption")
            ),
            30,
            "no overlay of kept tokens",
        )
        size = driver.execute_script(
            "const i = document.querySelector('#vigil-looks img'); return [i.naturalWidth, i.naturalHeight];"
        )
        assert size[0] >= 300 and size[1] >= 200
        looks = ui.looks()
        assert looks is not None and looks.image.shape[2] == 3
        lit = (looks.image.astype(int) == [255, 170, 0]).all(axis=2).mean()  # outlines of the kept tokens
        assert 0 < lit < 1
        shot = tmp_path / "vigil-file-watch.png"
        driver.save_screenshot(str(shot))
        artifact_saver(shot)
        element = tmp_path / "vigil-where-it-looks.png"
        driver.find_element(By.ID, "vigil-looks").screenshot(str(element))
        artifact_saver(element)

        # settings: the empty threshold means the default, frames per step can be chosen
        driver.find_element(By.CSS_SELECTOR, "#vigil-settings button").click()
        field = "#vigil-threshold textarea, #vigil-threshold input"
        threshold = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, field), 10, "no threshold field")
        assert threshold.get_attribute("value") == ""
        steps = driver.find_element(By.CSS_SELECTOR, "#vigil-frames-per-step input")
        steps.click()
        choices = "[role=option], ul.options li"
        option = wait(
            driver,
            lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, choices) if o.text.strip() == "1"), None),
            10,
            "no frames-per-step choice",
        )
        option.click()
        driver.find_element(By.ID, "vigil-apply").click()
        wait(
            driver,
            lambda d: "1 frame(s) per step, drop threshold default" in text_of(d, "vigil-settings-note"),
            90,
            f"the settings were not applied with the default threshold: {text_of(driver, 'vigil-settings-note')}",
        )
        fresh = wait(driver, lambda d: next(iter(app.registry.sessions.values()), None), 10, "no session")
        assert fresh.config.perception.frames_per_step == 1
        assert fresh.config.perception.drop.threshold is None
    finally:
        driver.quit()


def test_the_app_under_serve_ui_names_its_own_command(tiny_model_dir) -> None:
    from demos.views import model_banner

    banner = model_banner(str(tiny_model_dir), "vigil serve --ui")
    assert "vigil serve --ui --model" in banner and "vigil demo" not in banner
    assert "vigil demo --model" in model_banner("tiny")
