"""The OpenAI-compatible routes as the official ``openai`` client sees them, against a real server on loopback."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from assistant.models.tiny_tokenizer import _WORDS


@pytest.fixture(scope="module")
def client(api: Any) -> OpenAI:
    return OpenAI(base_url=api.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def served(api: Any) -> str:
    return api.app.state.model_name


def video_part(path: Path) -> dict[str, Any]:
    data = base64.b64encode(path.read_bytes()).decode()
    return {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{data}"}}


def image_part(data: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(data).decode()}}


def test_models_list_the_served_model_then_live_sessions(api: Any, client: OpenAI, served: str) -> None:
    with api.client() as c:
        sid = c.post("/v1/sessions", json={}).json()["id"]
    try:
        models = client.models.list().data
        assert models[0].id == served and models[0].owned_by == "vigil"
        assert f"vigil:{sid}" in [m.id for m in models]
    finally:
        with api.client() as c:
            c.delete(f"/v1/sessions/{sid}")


def test_stateless_question_about_a_video_data_url(api: Any, client: OpenAI, served: str, real_clips: Any) -> None:
    before = set(api.service.hosted)
    completion = client.chat.completions.create(
        model=served,
        messages=[
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": [video_part(real_clips["bikes"]), {"type": "text", "text": "What moves?"}]},
        ],
        max_tokens=4,
        extra_body={"min_tokens": 2},
    )
    assert completion.model == served and completion.choices[0].message.role == "assistant"
    usage = completion.usage
    assert usage.completion_tokens >= 2
    # the video is in the context: far more prompt tokens than the words of the question
    assert usage.prompt_tokens > 100 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 <= usage.prompt_tokens_details.cached_tokens <= usage.prompt_tokens
    assert set(api.service.hosted) == before  # the short-lived session is gone
    # the test model's random answers are made of whole words, not byte noise
    words = completion.choices[0].message.content.replace(".", " ").replace(",", " ").replace("?", " ").split()
    assert words and set(words) <= set(_WORDS), completion.choices[0].message.content


def test_stateless_images_streamed_with_usage(api: Any, client: OpenAI, served: str, tools: Any) -> None:
    parts = [image_part(tools.jpeg(i)) for i in range(3)] + [{"type": "text", "text": "What changed?"}]
    chunks = list(
        client.chat.completions.create(
            model=served,
            messages=[{"role": "user", "content": parts}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=3,
            extra_body={"min_tokens": 1},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens <= chunks[-1].usage.prompt_tokens
    assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks)


def test_seed_makes_sampling_repeatable(client: OpenAI, served: str, tools: Any) -> None:
    def ask(seed: int) -> str:
        completion = client.chat.completions.create(
            model=served,
            messages=[{"role": "user", "content": [image_part(tools.jpeg(7)), {"type": "text", "text": "What?"}]}],
            temperature=2.0,
            seed=seed,
            max_tokens=6,
            extra_body={"min_tokens": 6},
        )
        return completion.choices[0].message.content

    assert ask(3) == ask(3)
    assert len({ask(seed) for seed in range(4)}) > 1  # the seed is what makes them equal: others differ


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"stop": ["."], "top_p": 0.5}, "stop, top_p"),
    ],
)
def test_unsupported_parameters_are_refused_by_name(client: OpenAI, served: str, extra: dict, named: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=served, messages=[{"role": "user", "content": "hi"}], **extra)
    err = caught.value
    assert err.status_code == 400 and err.code == "unsupported_parameter"
    assert named in err.body["message"] and err.body["type"] == "invalid_request_error"
    assert err.body["param"] == named.split(",")[0]


def test_neutral_values_of_unsupported_parameters_are_accepted(client: OpenAI, served: str, tools: Any) -> None:
    completion = client.chat.completions.create(
        model=served,
        messages=[{"role": "user", "content": [image_part(tools.jpeg(1)), {"type": "text", "text": "Hi?"}]}],
        n=1,
        top_p=1.0,
        logprobs=False,
        user="someone",
        max_tokens=2,
    )
    assert completion.choices[0].message.role == "assistant"


def test_errors_take_openai_shape(api: Any, client: OpenAI, served: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:  # empty messages: a validation error, 400 as in vLLM
        client.chat.completions.create(model=served, messages=[])
    assert caught.value.code == "invalid_request" and "messages" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found" and caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match="last message must be the user"):
        client.chat.completions.create(model=served, messages=[{"role": "assistant", "content": "hi"}])
    with api.client() as c:  # the raw body: message, type, param, code
        body = {"model": served, "messages": [{"role": "user", "content": "x"}], "n": 3}
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": 42}},
        {"type": "image_url", "image_url": "not a dict or data url"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,@@@"}},
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(b"no video").decode()}},
        {"type": "video_url", "video_url": {"url": "/etc/passwd"}},
        {"type": "input_audio", "input_audio": {}},
    ],
)
def test_bad_parts_are_4xx_and_leave_no_session(api: Any, served: str, part: dict) -> None:
    before = set(api.service.hosted)
    body = {"model": served, "messages": [{"role": "user", "content": [part, {"type": "text", "text": "q"}]}]}
    with api.client() as c:
        r = c.post("/v1/chat/completions", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["message"] and r.json()["error"]["code"]
    assert set(api.service.hosted) == before


def test_image_only_message_to_a_live_session_pushes_nothing(api: Any, tools: Any) -> None:
    with api.client() as c:
        sid = c.post("/v1/sessions", json={}).json()["id"]
        try:
            body = {"model": f"vigil:{sid}", "messages": [{"role": "user", "content": [image_part(tools.jpeg(2))]}]}
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 400 and "question" in r.json()["error"]["message"]
            assert c.get(f"/v1/sessions/{sid}/memory").json()["frames"]["received"] == 0
        finally:
            c.delete(f"/v1/sessions/{sid}")


def test_stateless_video_by_path_under_the_allow_list(start_server: Any, real_clips: Any, tmp_path: Path) -> None:
    import shutil

    allowed = tmp_path / "videos"
    allowed.mkdir()
    clip = Path(shutil.copy(real_clips["bikes"], allowed / "bikes.mp4"))
    server = start_server(server={"video_allow": [str(allowed)]})
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    served = server.app.state.model_name

    def ask(path: str) -> Any:
        part = {"type": "video_url", "video_url": {"url": path}}
        messages = [{"role": "user", "content": [part, {"type": "text", "text": "What moves?"}]}]
        return client.chat.completions.create(model=served, messages=messages, max_tokens=2)

    assert ask(str(clip)).usage.prompt_tokens > 100
    with pytest.raises(openai.PermissionDeniedError) as caught:
        ask(str(real_clips["bikes"]))  # the same video outside the allowed folder
    assert caught.value.code == "source_not_allowed"
    with pytest.raises(openai.NotFoundError):
        ask(str(allowed / "missing.mp4"))
    assert not server.service.hosted  # every short-lived session is gone
