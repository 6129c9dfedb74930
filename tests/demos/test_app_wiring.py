"""How the app is put together: the key login, the page script shipped as package data, the tab idle timeout."""

from __future__ import annotations

import pytest

from assistant.config import VigilConfig
from assistant.orchestrator import Orchestrator
from demos.assets import camera_js
from demos.login import KeyLogin
from serving.auth import KeyRing
from serving.engines.hf import HFEngine
from serving.service import VigilService


def test_a_user_name_acts_as_the_owner_of_the_key_it_first_logged_in_with() -> None:
    keys = KeyRing(("key-000000001", "key-000000002"))
    login = KeyLogin(keys)
    assert login("alice", "key-000000001") and login("alice", "key-000000001")  # again: same key, fine
    assert not login("alice", "wrong-key") and not login("mallory", "")
    assert not login("alice", "key-000000002")  # another key cannot take over alice's sessions
    assert login("bob", "key-000000002")
    assert login.owner_of("alice") == keys.owner("Bearer key-000000001")
    assert login.owner_of("bob") == keys.owner("Bearer key-000000002") != login.owner_of("alice")
    assert login.owner_of("mallory") is None and login.owner_of(None) is None


def test_the_camera_script_is_package_data_with_the_banner_style() -> None:
    script = camera_js("background:#fde8e8;")
    assert script.startswith("async () => {") and "__BANNER_STYLE__" not in script
    assert 'el.style.cssText = "background:#fde8e8; padding' in script
    assert "Camera permission denied" in script


@pytest.mark.slow
def test_tabs_idle_out_after_the_configured_ui_timeout(tiny_adapter) -> None:
    from demos.gradio_app import build_app, sessions_of

    config = VigilConfig(server={"ui_idle_timeout_s": 45})
    service = VigilService(config, Orchestrator(HFEngine(tiny_adapter, config.engine), tiny_adapter, config))
    assert sessions_of(build_app(service, config)).idle_timeout_s == 45


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://cam.local/live.m3u8", True),
        ("http://cam.local.evil.example/live.m3u8", False),  # a host that only starts like the allowed one
        ("http://cam.local/../admin", False),
        ("rtsp://cam.local/live", False),  # another scheme
    ],
)
def test_stream_urls_pass_the_services_allow_list(url: str, allowed: bool) -> None:
    from assistant.config import VigilConfig
    from demos.context import STREAM_URL_SCHEMES, AppContext
    from demos.errors import UiError

    app = AppContext(service=None, config=VigilConfig(), registry=None, url_prefixes=("http://cam.local",))  # type: ignore[arg-type]
    if allowed:
        assert app.playable(url, None) == (url, url)
    else:
        with pytest.raises(UiError, match="not told to allow"):
            app.playable(url, None)
    local = AppContext(service=None, config=VigilConfig(), registry=None, url_prefixes=STREAM_URL_SCHEMES)  # type: ignore[arg-type]
    assert local.playable(url, None) == (url, url)  # a local demo plays any stream URL
