"""The config tree validates every field and names what is wrong."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from assistant.config import ModelConfig, PerceptionConfig, VigilConfig, format_validation_error
from memory.token_drop import DropPolicy


def test_defaults() -> None:
    cfg = VigilConfig()
    assert cfg.model.name == "tiny"
    assert cfg.perception.fps == 1.0
    assert isinstance(cfg.perception.drop, DropPolicy)


def test_nested_dicts_become_typed() -> None:
    cfg = VigilConfig(perception={"fps": 2, "drop": {"mode": "pixel", "threshold": 0.1}})
    assert cfg.perception.drop == DropPolicy(mode="pixel", threshold=0.1)


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"perception": {"fps": 0}}, "perception.fps"),
        ({"perception": {"fps": 1000}}, "perception.fps"),
        ({"perception": {"frames_per_step": 0}}, "perception.frames_per_step"),
        ({"model": {"dtype": "int4"}}, "model.dtype"),
        ({"model": {"name": ""}}, "model.name"),
        ({"model": {"max_pixels": 10}}, "model.max_pixels"),
        ({"modle": {}}, "modle"),
    ],
)
def test_bad_fields_are_named(kwargs: dict, where: str) -> None:
    with pytest.raises(ValidationError) as info:
        VigilConfig(**kwargs)
    assert format_validation_error(info.value).startswith(where)


def test_cross_field_rules() -> None:
    with pytest.raises(ValidationError, match="must not exceed"):
        ModelConfig(min_pixels=28 * 28 * 10, max_pixels=28 * 28 * 5)
    with pytest.raises(ValidationError, match="needs the vision encoder"):
        PerceptionConfig(drop={"mode": "feature"}, encode="never")
    with pytest.raises(ValidationError, match=r"unknown drop option\(s\) \['bogus'\]"):
        PerceptionConfig(drop={"mode": "pixel", "bogus": 1})
    with pytest.raises(ValidationError, match="threshold"):
        PerceptionConfig(drop={"mode": "pixel", "threshold": 0.1, "drop_ratio": 0.5})


def test_frozen() -> None:
    cfg = VigilConfig()
    with pytest.raises(ValidationError):
        cfg.perception.fps = 3  # type: ignore[misc]


def test_session_options_apply_on_top_of_a_config() -> None:
    from pydantic import ValidationError

    from assistant.config import SessionOptions, VigilConfig

    def with_session_options(config: VigilConfig, **choices: object) -> VigilConfig:
        return SessionOptions(**choices).apply(config)

    base = VigilConfig(perception={"drop": {"mode": "pixel", "drop_ratio": 0.5}})
    c = with_session_options(base, fps=3, budget_tokens=256, drop_threshold=0.1, max_new_tokens=9)
    assert (c.perception.fps, c.memory.budget_tokens, c.engine.max_new_tokens) == (3, 256, 9)
    assert c.perception.drop.threshold == 0.1 and c.perception.drop.drop_ratio is None  # threshold replaces ratio
    c = with_session_options(c, drop_ratio=0.25)
    assert c.perception.drop.drop_ratio == 0.25 and c.perception.drop.threshold is None
    c = with_session_options(base, drop_mode="feature")  # a new mode starts from its defaults
    assert c.perception.drop.mode == "feature" and c.perception.drop.drop_ratio is None
    assert with_session_options(base) == base
    with pytest.raises(ValidationError, match="kv_cap_tokens"):
        with_session_options(base, budget_tokens=100_000)
    with pytest.raises(ValidationError):
        with_session_options(base, drop_threshold=0.1, drop_ratio=0.2)  # both at once is refused
