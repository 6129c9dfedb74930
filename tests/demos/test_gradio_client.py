"""The app's plain endpoints driven with gradio_client: sessions, frames, questions, events, errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from assistant.reaction import EngineError
from serving.engines.hf import HFEngine
from tests.support import wait_until

from .conftest import app_config


@pytest.fixture(scope="module")
def frame_files(camera_frames: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every 5th frame of the camera clip (2 fps of real video) as PNG files."""
    folder = tmp_path_factory.mktemp("frames")
    paths = []
    for i, frame in enumerate(camera_frames[::5]):
        path = folder / f"frame{i:03d}.png"
        Image.fromarray(frame).save(path)
        paths.append(path)
    return paths


@pytest.fixture()
def client(app) -> Client:
    return Client(app.url, verbose=False)


def start(client: Client, fps: object = 2.0, threshold: object = None, budget: object = 2048, **kw: str) -> dict:
    return client.predict(
        fps, threshold, budget, kw.get("proactive", "scene"), kw.get("instructions", ""), api_name="/start_session"
    )


def push(client: Client, sid: str, path: Path, t: float | None) -> dict:
    return client.predict(sid, handle_file(str(path)), t, api_name="/push_frame")


@pytest.mark.slow
def test_a_session_watches_answers_and_ends(client: Client, app, frame_files: list[Path]) -> None:
    started = start(client, instructions="tell me when a bike passes")
    sid = started["session_id"]
    assert started["settings"] == {
        "fps": 2.0,
        "drop_threshold": None,
        "budget_tokens": 2048,
        "proactive": "scene",
        "instructions": ["tell me when a bike passes"],
        "frames_per_step": None,
    }
    live_id = started["live_session_id"]
    assert live_id in app.orchestrator.sessions
    for i, path in enumerate(frame_files):
        reply = push(client, sid, path, i * 0.5)
        assert reply["status"] == "accepted" and reply["accepted"] is True
    stats = wait_until(
        lambda: (s := client.predict(sid, api_name="/stats"))["processed_frames"] == len(frame_files) and s
    )
    assert stats["steps"] == len(frame_files) // 2 and 0 < stats["memory_tokens"] <= stats["memory_budget"] == 2048
    assert 0.0 <= stats["drop_ratio"] < 1.0 and stats["frames_dropped"] == {
        "backpressure": 0,
        "invalid": 0,
        "failed": 0,
    }

    answer = client.predict(sid, "What is happening in the video?", api_name="/ask")
    assert answer["finish_reason"] in ("stop", "length") and answer["generated_tokens"] >= 1
    assert answer["text"] and answer["total_s"] >= answer["ttft_s"] > 0
    assert answer["t"] == stats["stream_t"]  # asked at the stream time of the last processed frame

    page = client.predict(sid, 0, api_name="/events")
    events = page["events"]
    assert page["live_session_id"] == live_id and page["last_seq"] == events[-1]["seq"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["type"] for e in events]
    assert kinds.count("frame_accepted") == len(frame_files)
    mine = [e for e in events if e.get("answer_id") == answer["answer_id"]]
    assert mine[0]["type"] == "answer_start" and mine[-1]["type"] == "answer_done"
    deltas = "".join(e["text"] for e in mine if e["type"] == "answer_delta")
    assert len([e for e in mine if e["type"] == "answer_delta"]) >= 2 and deltas.strip() == answer["text"].strip()
    # the bunny -> bikes cut (frame 8, 4.0 s) and the bikes clip's own cut at 1.2 s (first seen at 5.5 s) are
    # reported by themselves: proactive scene-change triggers
    assert [e["t"] for e in events if e["type"] == "trigger" and e["kind"] == "scene_change"] == [4.0, 5.5]
    later = client.predict(sid, page["last_seq"], api_name="/events")
    assert all(e["seq"] > page["last_seq"] for e in later["events"])

    stats = client.predict(sid, api_name="/stats")
    assert stats["answers"] == 1 and stats["last_total_s"] == answer["total_s"]
    assert client.predict(sid, api_name="/end_session") == {"closed": True}
    assert live_id not in app.orchestrator.sessions
    with pytest.raises(AppError, match=r"no session .* start a new one"):
        client.predict(sid, api_name="/stats")
    assert client.predict(sid, api_name="/end_session") == {"closed": False}


@pytest.mark.slow
def test_bad_input_gets_a_clear_error_and_the_session_goes_on(
    client: Client, frame_files: list[Path], tmp_path
) -> None:
    for args, message in [
        ((0, None, 2048), "fps: Input should be greater than 0"),
        ((100, None, 2048), "fps must be at most 30"),
        (("fast", None, 2048), "fps must be a number"),
        ((2, 1.5, 2048), "threshold must be in \\[-1, 1\\]"),
        ((2, None, 8), "budget_tokens: Input should be greater than or equal to 16"),
        ((2, None, 10**6), "kv_cap_tokens"),
    ]:
        with pytest.raises(AppError, match=message):
            start(client, *args)
    with pytest.raises(AppError, match="proactive must be one of off, scene, narrate"):
        start(client, proactive="loud")

    sid = start(client, 2.0, 0.9, 1024, proactive="off")["session_id"]
    assert push(client, sid, frame_files[0], 0.0)["accepted"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(AppError, match="frame rejected: not a decodable JPEG/PNG/WEBP image"):
        push(client, sid, broken, 0.5)
    assert push(client, sid, frame_files[1], 0.5)["accepted"]
    with pytest.raises(AppError, match=r"frame rejected: frame time 0\.250 s is before the previous one"):
        push(client, sid, frame_files[2], 0.25)
    with pytest.raises(AppError, match="the question is empty"):
        client.predict(sid, "   ", api_name="/ask")
    with pytest.raises(AppError, match="no session 'nope'"):
        client.predict("nope", "hello?", api_name="/ask")
    with pytest.raises(AppError, match="after must be an event sequence number >= 0"):
        client.predict(sid, "x", api_name="/events")

    # the session is unharmed: frames go on, questions are answered, the rejects are counted
    assert push(client, sid, frame_files[3], 1.0)["accepted"]
    wait_until(lambda: client.predict(sid, api_name="/stats")["processed_frames"] == 3)
    assert client.predict(sid, "and now?", api_name="/ask")["text"]
    stats = client.predict(sid, api_name="/stats")
    assert stats["frames_dropped"] == {"backpressure": 0, "invalid": 2, "failed": 0}
    assert stats["settings"]["drop_threshold"] == 0.9 and stats["memory_budget"] == 1024
    client.predict(sid, api_name="/end_session")


@pytest.mark.slow
def test_clients_have_independent_sessions(app, frame_files: list[Path]) -> None:
    first, second = Client(app.url, verbose=False), Client(app.url, verbose=False)
    a = start(first, proactive="off")["session_id"]
    b = start(second, proactive="off")["session_id"]
    assert a != b
    for i, path in enumerate(frame_files[:4]):
        push(first, a, path, i * 0.5)
    wait_until(lambda: first.predict(a, api_name="/stats")["processed_frames"] == 4)
    assert second.predict(b, api_name="/stats")["processed_frames"] == 0
    assert not [e for e in second.predict(b, 0, api_name="/events")["events"] if e["type"] == "frame_accepted"]
    first.predict(a, api_name="/end_session")
    assert push(second, b, frame_files[0], 0.0)["accepted"]  # the other session is untouched
    second.predict(b, api_name="/end_session")


@pytest.mark.slow
def test_instructions_and_a_video_file_played_as_live(client: Client, real_clips: dict[str, Path]) -> None:
    sid = start(client, proactive="off")["session_id"]
    added = client.predict(sid, "tell me when a car stops", api_name="/add_instruction")
    assert added == {"instruction": "tell me when a car stops", "instructions": ["tell me when a car stops"]}
    with pytest.raises(AppError, match="the instruction is empty"):
        client.predict(sid, "  ", api_name="/add_instruction")
    with pytest.raises(AppError, match="does not play stream URLs it was not told to allow"):
        client.predict(sid, None, "rtsp://camera.invalid/stream", api_name="/play")
    with pytest.raises(AppError, match="enter a stream URL"):
        client.predict(sid, None, "/etc/passwd", api_name="/play")

    playing = client.predict(sid, handle_file(str(real_clips["bikes"])), "", api_name="/play")
    assert playing == {"playing": "bikes.mp4"}
    start_wall = time.monotonic()
    stats = wait_until(lambda: (s := client.predict(sid, api_name="/stats"))["processed_frames"] >= 4 and s)
    # played as live: 4 frames at 2 fps take about 1.5 s of wall time, not a burst
    assert time.monotonic() - start_wall >= 1.0 and stats["playing"] == "bikes.mp4"
    assert client.predict(sid, api_name="/stop") == {"stopped": True}
    stats = client.predict(sid, api_name="/stats")
    assert stats["playing"] is None and stats["settings"]["instructions"] == ["tell me when a car stops"]
    events = client.predict(sid, 0, api_name="/events")["events"]
    times = [e["t"] for e in events if e["type"] == "frame_accepted"]
    assert times == sorted(times) and len(times) >= 4
    client.predict(sid, api_name="/end_session")


class FlakyEngine(HFEngine):
    """The real engine, with switches that make opening sessions or answering fail."""

    fail_open = False
    fail_answers = False

    async def open_session(self, session_id: str) -> None:
        if self.fail_open:
            raise EngineError("engine unreachable")
        await super().open_session(session_id)

    def answer(self, session_id, request):
        if self.fail_answers:
            raise EngineError("out of GPU memory")
        return super().answer(session_id, request)


@pytest.mark.slow
def test_engine_failures_are_reported_clearly(tiny_adapter, app_server, app_stopper, frame_files) -> None:
    from demos.views import status_banner

    config = app_config()
    engine = FlakyEngine(tiny_adapter, config.engine)
    running = app_server(tiny_adapter, config, engine=engine)
    try:
        client = Client(running.url, verbose=False)
        sid = start(client, proactive="off")["session_id"]
        push(client, sid, frame_files[0], 0.0)
        engine.fail_answers = True
        with pytest.raises(AppError, match="the engine failed: out of GPU memory"):
            client.predict(sid, "hello?", api_name="/ask")
        stats = client.predict(sid, api_name="/stats")
        assert "the engine failed" in stats["error"] and "out of GPU memory" in stats["error"]
        ui = running.registry.get(sid)
        assert "Error: the engine failed at" in status_banner(ui)
        assert any(m.kind == "error" and "out of GPU memory" in m.text for m in ui.messages)
        engine.fail_answers = False
        assert client.predict(sid, "and now?", api_name="/ask")["text"]  # recovered; the banner clears
        assert client.predict(sid, api_name="/stats")["error"] is None
        engine.fail_open = True
        with pytest.raises(AppError, match="the engine could not start a session: engine unreachable"):
            start(client)
    finally:
        engine.fail_open = engine.fail_answers = False
        app_stopper(running)
