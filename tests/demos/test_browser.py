"""The app in a real browser: headless Chromium with a fake camera fed from a y4m clip of real video."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import wait_until

from .conftest import RunningApp, app_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)"
    ),
]


def chrome(camera: Path | None = None, *, deny_camera: bool = False):
    """Headless Chromium; with ``camera`` its webcam plays that y4m clip, with ``deny_camera`` the camera is blocked."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMEDRIVER.exists(), "chromium is installed but chromedriver is not (apt install chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1700", "--lang=en-US"):
        options.add_argument(arg)
    options.add_argument("--use-fake-device-for-media-stream")
    if camera is not None:
        options.add_argument("--use-fake-ui-for-media-stream")
        options.add_argument(f"--use-file-for-fake-video-capture={camera}")
    if deny_camera:
        options.add_experimental_option("prefs", {"profile.default_content_setting_values.media_stream_camera": 2})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def wait(driver, condition, timeout: float, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d), message)


def text_of(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, elem_id)
    return found[0].text if found else ""


def tab_session(app: RunningApp, tabs_before: set[str]):
    """The session a newly opened tab got (the one whose tab was not there before)."""
    fresh = [ui for ui in list(app.registry.sessions.values()) if ui.tab and ui.tab not in tabs_before]
    return fresh[0] if len(fresh) == 1 else None


def start_camera(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, '#vigil-camera [title="grant webcam access"] button').click()
    record = wait(
        driver,
        lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "#vigil-camera button.capture-button")), None),
        30,
        "the webcam's record button did not appear",
    )
    record.click()


RECORD_CHAT_JS = """
window.vigilChatStates = [];
const chat = document.getElementById("vigil-chat");
new MutationObserver(() => {
  const text = chat.innerText;
  const states = window.vigilChatStates;
  if (states[states.length - 1] !== text) states.push(text);
}).observe(chat, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser_app(tiny_adapter, app_server, app_stopper) -> Iterator[RunningApp]:
    previous = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "1"  # a closed tab is noticed within about a second
    # answers of 48-96 tokens take a few hundred ms on the tiny model: long enough to be seen streaming
    running = app_server(tiny_adapter, app_config(max_new_tokens=96), answer_options={"min_new_tokens": 48})
    yield running
    app_stopper(running)
    if previous is None:
        os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)
    else:
        os.environ["GRADIO_HEARTBEAT_INTERVAL"] = previous


def test_live_chat_in_a_real_browser(browser_app: RunningApp, camera_y4m: Path, tmp_path, artifact_saver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    app = browser_app
    driver = chrome(camera_y4m)
    try:
        driver.get(app.url)
        wait(driver, lambda d: "Session started" in text_of(d, "vigil-chat"), 60, "the tab got no session")
        ui = wait(driver, lambda d: tab_session(app, set()), 10, "no session for the tab")
        assert "random weights" in text_of(driver, "vigil-model-banner")
        assert not driver.find_elements(By.ID, "vigil-camera-banner")  # the camera is allowed: no camera banner

        # the fake camera's frames stream into this tab's session
        start_camera(driver)
        wait(driver, lambda d: ui.live.processed_frames >= 4, 40, "camera frames did not reach the session")
        wait(driver, lambda d: "frames processed" in text_of(d, "vigil-stats"), 20, "no live numbers")
        assert ui.live.frames_dropped == {"backpressure": 0, "invalid": 0, "failed": 0}

        # the hard cut in the clip makes the chat speak up by itself: nobody has typed anything
        wait(driver, lambda d: "Scene change" in text_of(d, "vigil-chat"), 45, "no proactive message appeared")
        assert not [m for m in ui.messages if m.role == "user"]
        scene = next(m for m in ui.messages if m.kind == "scene")
        assert f"{scene.t:.1f} s" in text_of(driver, "vigil-chat")  # shown with its stream time

        # a typed question gets an answer streamed into the chat
        driver.execute_script(RECORD_CHAT_JS)
        box = driver.find_element(By.CSS_SELECTOR, "#vigil-question textarea")
        box.send_keys("What is happening right now?")
        box.send_keys(Keys.ENTER)
        answer = wait(
            driver,
            lambda d: next((m for m in ui.messages if m.kind == "answer" and m.done), None),
            60,
            "the question got no answer",
        )
        assert answer.text and answer.answer_id
        wait(driver, lambda d: answer.text[:12] in text_of(d, "vigil-chat"), 20, "the answer is not shown")
        states = [s for s in driver.execute_script("return window.vigilChatStates") if "What is happening" in s]
        head = answer.text.strip()[:4]
        partial = [s for s in states if s.rstrip().endswith("…") and head in s.split("What is happening")[-1]]
        # seen growing: some of its text on the page while it was still being generated
        assert len(states) >= 3 and partial, f"the answer was not streamed: {len(states)} chat states"
        assert box.get_attribute("value") == ""  # the question box was cleared

        # the live panel: drop ratio, memory and latency plots, and the numbers
        wait(driver, lambda d: "first token" in text_of(d, "vigil-stats"), 20, "no answer latency shown")
        for plot in ("vigil-drop-plot", "vigil-memory-plot", "vigil-latency-plot"):
            marks = driver.find_elements(By.CSS_SELECTOR, f"#{plot} canvas, #{plot} svg")
            assert marks, f"{plot} has no chart"
        assert len(ui.drops) >= 2 and ui.latency and 0 < ui.memory[-1][1] <= 2048
        # "where Vigil looks" on the webcam's frames: the newest step's kept tokens and its drop ratio
        wait(
            driver,
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "#vigil-looks img")
                and "drop ratio" in text_of(d, "vigil-looks-caption")
            ),
            30,
            "no overlay of the camera's kept tokens",
        )
        shot = tmp_path / "vigil-live-chat.png"
        driver.save_screenshot(str(shot))
        artifact_saver(shot)

        # a second tab is a second, independent session; closing it ends that session only
        first_tab = driver.current_window_handle
        tabs = {u.tab for u in app.registry.sessions.values()}
        driver.switch_to.new_window("tab")
        driver.get(app.url)
        wait(driver, lambda d: "Session started" in text_of(d, "vigil-chat"), 60, "the second tab got no session")
        other = wait(driver, lambda d: tab_session(app, tabs), 10, "no session for the second tab")
        assert other.live.session_id != ui.live.session_id and other.live.processed_frames == 0
        assert "Scene change" not in text_of(driver, "vigil-chat")
        driver.close()
        driver.switch_to.window(first_tab)
        wait(driver, lambda d: other.live.closed, 30, "closing the tab did not end its session")
        assert other.ended == "tab closed" and other.ui_id not in app.registry.sessions
        frames = ui.live.processed_frames
        wait(driver, lambda d: ui.live.processed_frames > frames, 20, "the first tab stopped streaming")
        assert not ui.live.closed
    finally:
        driver.quit()
    wait_until(lambda: ui.live.closed, 30, 0.2, "the closed tab's session to end")
    assert ui.ended == "tab closed"


def test_a_denied_camera_shows_a_banner(browser_app: RunningApp, tmp_path, artifact_saver) -> None:
    driver = chrome(deny_camera=True)
    try:
        driver.get(browser_app.url)
        wait(driver, lambda d: "Session started" in text_of(d, "vigil-chat"), 60, "the tab got no session")
        start_camera_click = "document.querySelector('#vigil-camera [title=\"grant webcam access\"] button').click()"
        driver.execute_script(start_camera_click)
        wait(
            driver,
            lambda d: "Camera permission denied" in text_of(d, "vigil-camera-banner"),
            30,
            "no banner for the denied camera",
        )
        shot = tmp_path / "vigil-camera-denied.png"
        driver.save_screenshot(str(shot))
        artifact_saver(shot)

        # settings: a bad value is refused with the reason, a good one restarts the session with it
        from selenium.webdriver.common.by import By

        driver.find_element(By.CSS_SELECTOR, "#vigil-settings button").click()  # open the accordion
        fps = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#vigil-fps input"), 10, "no fps field")
        fps.clear()
        fps.send_keys("0")
        driver.find_element(By.ID, "vigil-apply").click()
        wait(
            driver,
            lambda d: "perception.fps: Input should be greater than 0" in text_of(d, "vigil-settings-note"),
            20,
            "a bad fps was not refused with its reason",
        )
        fps.clear()
        fps.send_keys("1")
        driver.find_element(By.ID, "vigil-apply").click()
        wait(driver, lambda d: "Applied: 1 fps" in text_of(d, "vigil-settings-note"), 20, "good settings not applied")
        wait(driver, lambda d: "Session started: 1 fps" in text_of(d, "vigil-chat"), 20, "the session did not restart")
    finally:
        driver.quit()


def test_vigil_demo_serves_the_app(vigil_home, camera_frames, tmp_path) -> None:
    """``vigil demo`` loads the model, serves the app, and stops cleanly on SIGTERM."""
    from gradio_client import Client, handle_file
    from PIL import Image

    from .conftest import free_port

    port = free_port()
    vigil = Path(sys.executable).with_name("vigil")
    command = [str(vigil)] if vigil.exists() else [sys.executable, "-c", "from serving.cli import main; main()"]
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*command, "demo", "--model", "tiny", "--port", str(port), "--fps", "2", "--budget", "2048"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VIGIL_HOME": str(vigil_home)},
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"vigil demo exited: {log.read_text()}"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"vigil demo did not start: {log.read_text()}"
            time.sleep(0.25)
        client = Client(url, verbose=False)
        sid = client.predict(2.0, None, 2048, "scene", "", api_name="/start_session")["session_id"]
        Image.fromarray(camera_frames[0]).save(tmp_path / "frame.png")
        assert client.predict(sid, handle_file(str(tmp_path / "frame.png")), 0.0, api_name="/push_frame")["accepted"]
        assert client.predict(sid, "what do you see?", api_name="/ask")["generated_tokens"] >= 1
        assert "random weights" in httpx.get(url + "config", timeout=5).text  # the test-model banner is on the page
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()
    output = log.read_text()
    assert f"the live-video chat app is at http://127.0.0.1:{port}/" in output
    assert "vigil: stopped (" in output  # sessions and engine were shut down on the way out


def test_a_tab_over_the_session_limit_says_so(tiny_adapter, app_server, app_stopper) -> None:
    """Tabs are service sessions: past the per-key limit a new tab gets no session and a banner that says why."""
    from assistant.config import VigilConfig

    config = VigilConfig(**app_config().model_dump(exclude={"server"}), server={"limits": {"max_sessions_per_key": 1}})
    app = app_server(tiny_adapter, config)
    driver = chrome()
    try:
        driver.get(app.url)
        wait(driver, lambda d: "Session started" in text_of(d, "vigil-chat"), 60, "the first tab got no session")
        first = wait(driver, lambda d: tab_session(app, set()), 10, "no session for the first tab")
        driver.switch_to.new_window("tab")
        driver.get(app.url)
        wait(
            driver,
            lambda d: "No session: this API key has 1 open sessions" in text_of(d, "vigil-error-banner"),
            60,
            "the refused tab shows no reason",
        )
        assert list(app.registry.sessions.values()) == [first] and not first.live.closed
    finally:
        driver.quit()
        app_stopper(app)
