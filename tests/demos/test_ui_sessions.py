"""Per-tab state without a server: settings validation, the transcript built from events, session lifetimes."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from assistant.config import VigilConfig
from assistant.events import (
    AnswerDeltaEvent,
    AnswerFinished,
    AnswerStarted,
    ErrorEvent,
    PerceptionStep,
    SessionClosed,
    TriggerFired,
)
from assistant.orchestrator import Orchestrator
from demos.errors import SessionRefused, UiError
from demos.registry import TabRegistry
from demos.settings import SessionSettings, make_settings
from demos.ui_sessions import UiSession
from demos.views import figures, model_banner, stats_markdown, status_banner
from serving.engines.hf import HFEngine
from serving.service import VigilService

BASE = VigilConfig(memory={"budget_tokens": 2048}, engine={"max_new_tokens": 8})


def test_settings_give_a_validated_session_config() -> None:
    settings, config = make_settings(
        BASE, "1.5", 0.8, 1024.0, "narrate", "tell me when a dog appears\n\n  look for cars "
    )
    assert settings == SessionSettings(1.5, 0.8, 1024, "narrate", ("tell me when a dog appears", "look for cars"))
    assert config.perception.fps == 1.5 and config.perception.drop.threshold == 0.8
    assert config.memory.budget_tokens == 1024 and config.engine == BASE.engine
    _, default = make_settings(BASE, 2, None, 2048)
    assert default.perception.drop.threshold is None and default.perception.drop.mode == BASE.perception.drop.mode
    ratio_base = VigilConfig(perception={"drop": {"drop_ratio": 0.5}})
    _, switched = make_settings(ratio_base, 1, 0.7, 2048)  # a threshold replaces a fixed drop ratio
    assert switched.perception.drop.threshold == 0.7 and switched.perception.drop.drop_ratio is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((float("nan"), None, 2048), "fps must be a finite number"),
        ((None, None, 2048), "fps must be a number"),
        ((-1, None, 2048), "fps: Input should be greater than 0"),
        ((1, -2, 2048), "threshold must be in"),
        ((1, None, 100.5), "token budget must be a whole number"),
        ((1, None, 20000), "kv_cap_tokens .* must hold the memory budget"),
        ((1, None, 2048, "sometimes"), "proactive must be one of off, scene, narrate"),
        ((1, None, 2048, "off", "\n".join(f"rule {i}" for i in range(17))), "at most 16 standing instructions"),
        ((1, None, 2048, "off", "x" * 1001), "at most 1000 characters"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(values: tuple, message: str) -> None:
    with pytest.raises(UiError, match=message):
        make_settings(BASE, *values)


def test_events_build_the_chat_with_stream_times_and_the_figures() -> None:
    ui = UiSession("u1", None)
    sid = "s1"
    events = [
        PerceptionStep(1, sid, 0.0, step=0, tokens=16, kept=16, drop_ratio=0.0, memory_tokens=16),
        PerceptionStep(2, sid, 1.0, step=1, tokens=16, kept=4, drop_ratio=0.75, memory_tokens=20),
        TriggerFired(3, sid, 4.0, kind="scene_change", score=0.61),
        AnswerStarted(4, sid, 4.0, answer_id="a1", kind="narration"),
        AnswerDeltaEvent(5, sid, 4.0, answer_id="a1", text="A cyclist"),
    ]
    for event in events:
        ui.apply(event)
    chat = ui.chat()
    assert chat[0] == {"role": "assistant", "content": "`4.0 s` **Scene change** (score 0.61)"}
    assert chat[1] == {"role": "assistant", "content": "`4.0 s` **Narration:** A cyclist …"}  # still streaming
    ui.apply(AnswerDeltaEvent(5, sid, 4.0, answer_id="a1", text=" again"))  # already applied: ignored
    ui.apply(AnswerDeltaEvent(6, sid, 4.0, answer_id="a1", text=" rides by"))
    ui.apply(
        AnswerFinished(
            7, sid, 4.0, answer_id="a1", kind="narration", text="A cyclist rides by.", ttft_s=0.1, total_s=0.4
        )
    )
    assert ui.chat()[1]["content"] == "`4.0 s` **Narration:** A cyclist rides by."
    ui.apply(TriggerFired(8, sid, 6.5, kind="instruction", score=0.9, instruction="tell me when a bike passes"))
    assert ui.chat()[2]["content"] == "`6.5 s` **Instruction** “tell me when a bike passes” is happening"
    ui.apply(AnswerStarted(9, sid, 7.0, answer_id="a2", kind="question", question="what now?"))
    ui.apply(ErrorEvent(10, sid, 7.0, code="engine_error", message="CUDA out of memory"))
    assert ui.chat()[3]["content"] == "`7.0 s` **Error:** (failed: CUDA out of memory)"
    assert status_banner(ui).count("the engine failed at 7.0 s: CUDA out of memory") == 1
    drops, memory, latency = figures(ui)
    assert drops.to_dict("list") == {"t": [0.0, 1.0], "drop_ratio": [0.0, 0.75]}
    assert memory["tokens"].tolist() == [16, 20]
    assert latency.to_dict("list") == {"t": [4.0, 4.0], "seconds": [0.1, 0.4], "metric": ["first token", "total"]}
    ui.apply(SessionClosed(11, sid, 8.0, reason="idle timeout"))
    assert "This session ended (idle timeout)" in status_banner(ui) and ui.cursor == 11


def test_banners_for_the_test_model_and_an_unavailable_engine(tiny_model_dir) -> None:
    assert "random weights" in model_banner(str(tiny_model_dir)) and "random weights" in model_banner("tiny")
    assert model_banner("Qwen/Qwen2.5-VL-3B-Instruct") == ""
    assert "the engine is unavailable" in status_banner(None)
    assert 'id="vigil-error-banner"' in status_banner(None, "Engine unavailable: <boom>")
    assert "&lt;boom&gt;" in status_banner(None, "Engine unavailable: <boom>")  # escaped
    assert stats_markdown(UiSession("u", None).stats()) == "No session."


def test_tabs_end_on_close_or_when_they_go_quiet(tiny_adapter) -> None:
    async def main() -> None:
        orchestrator = Orchestrator(HFEngine(tiny_adapter, BASE.engine), tiny_adapter, BASE)
        service = VigilService(BASE, orchestrator)
        registry = TabRegistry(service, idle_timeout_s=60)
        settings, _ = make_settings(BASE, 2, None, 2048, "scene")
        first = await registry.open(settings, tab="tab-1")
        second = await registry.open(settings, tab="tab-2")
        api = await registry.open(settings, tab=None)
        assert len(orchestrator.sessions) == 3 and first.live.session_id != second.live.session_id
        frame = np.full((112, 112, 3), 128, np.uint8)
        assert await first.push(frame, camera=True) == "accepted"
        assert await first.push(frame, camera=True) == "skipped"  # thinned to 2 fps
        with pytest.raises(UiError, match="frame rejected: not a decodable"):
            await first.push(b"junk", t=5.0)

        assert await registry.close_tab("tab-1") == 1
        assert first.live.closed and first.ended == "tab closed" and first.ui_id not in registry.sessions
        with pytest.raises(UiError, match="has ended \\(tab closed\\)"):
            await first.ask("still there?")

        new_settings, _ = make_settings(BASE, 1, 0.9, 1024, "off")
        old_live = second.live
        await registry.restart(second, new_settings)
        assert (
            old_live.closed and second.live is not old_live and second.live.session.config.memory.budget_tokens == 1024
        )
        assert second.settings.proactive == "off" and second.live.options.proactive == "off"

        second.last_seen -= 61  # a tab that vanished without closing
        assert await registry.reap() == [second.ui_id]
        assert second.live.closed and second.ended == "idle timeout" and list(registry.sessions) == [api.ui_id]
        await registry.close_all()
        assert not registry.sessions and not orchestrator.sessions and registry.loop is None
        await service.stop()

    asyncio.run(main())


def test_fake_camera_clip_is_c420_y4m_of_the_real_frames(camera_frames, y4m_writer, tmp_path) -> None:
    path = y4m_writer(camera_frames[:12], tmp_path / "clip.y4m", 10)
    assert path.read_bytes().split(b"\n", 1)[0] == b"YUV4MPEG2 W320 H240 F10:1 Ip A1:1 C420"
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 12
    for original, back in zip(camera_frames[:12], decoded, strict=True):
        assert np.abs(original.astype(int) - back).mean() < 4  # colour conversion and 4:2:0 only
    assert np.abs(camera_frames[39].astype(int) - camera_frames[40]).mean() > 30  # the hard cut at 4 s


def test_tab_sessions_are_service_sessions_under_its_limits(tiny_adapter, camera_frames) -> None:
    import io

    from PIL import Image

    from serving.auth import ANONYMOUS

    config = VigilConfig(**BASE.model_dump(exclude={"server"}), server={"limits": {"max_sessions_per_key": 2}})
    buffer = io.BytesIO()
    Image.fromarray(camera_frames[0]).save(buffer, format="JPEG")

    async def main() -> None:
        service = VigilService(config, Orchestrator(HFEngine(tiny_adapter, config.engine), tiny_adapter, config))
        registry = TabRegistry(service, idle_timeout_s=60)
        settings, _ = make_settings(config, 2, None, 1024, "off")
        first = await registry.open(settings, tab="tab-1")
        listed = await service.list(ANONYMOUS)
        assert [v.id for v in listed] == [first.live.session_id] and listed[0].options["budget_tokens"] == 1024
        assert await first.push(buffer.getvalue(), t=0.0) == "accepted"
        assert service.hosted[first.live.session_id].frames_in == 1  # counted by the service

        second = await registry.open(settings, tab="tab-2")
        with pytest.raises(SessionRefused, match="this API key has 2 open sessions; close one first"):
            await registry.open(settings, tab="tab-3")
        assert len(registry.sessions) == 2 and not first.live.closed and not second.live.closed

        assert await registry.close_tab("tab-1") == 1
        assert [v.id for v in await service.list(ANONYMOUS)] == [second.live.session_id]
        third = await registry.open(settings, tab="tab-3")  # room again
        assert third.live.session_id in service.hosted
        await registry.close_all()
        assert not service.hosted and await service.list(ANONYMOUS) == []
        await service.stop()

    asyncio.run(main())
