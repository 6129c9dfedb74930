"""Decision policies are causal and fire once per event."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from assistant.config import PROMPT_DEFAULTS, PerceptionConfig, PromptsConfig, SceneConfig
from assistant.decision import InstructionMonitor, SceneChangeDetector
from assistant.events import PerceptionUpdate
from assistant.perception import Perception, colour_histogram
from assistant.sources import VideoFileSource
from evaluation.proactive import score_triggers
from evaluation.synthetic import write_clip


def update(step: int, drop: float, reset: bool = False, change: float = 0.0) -> PerceptionUpdate:
    return PerceptionUpdate(
        step,
        float(step),
        float(step + 1),
        (step,),
        (4, 4),
        torch.arange(0),
        torch.zeros(3, 0),
        drop,
        change,
        0.0,
        reset,
    )


def frame_fires(detector: SceneChangeDetector, changes: list[float | None], fps: float = 1.0) -> list[float]:
    return [trig.t for i, c in enumerate(changes) if (trig := detector.frame(i / fps, c)) is not None]


def test_colour_cuts_fire_once_each_and_steady_motion_does_not() -> None:
    motion = [None] + [0.12, 0.1, 0.14, 0.11] * 3  # a panning camera: every frame changes a little
    changes = [*motion[:5], 0.7, *motion[5:9], 0.4, *motion[9:]]
    assert frame_fires(SceneChangeDetector(), changes) == [5.0, 10.0]
    fast = [None] + [0.3, 0.32, 0.29, 0.31] * 4  # steady fast motion over the threshold raises the bar
    assert frame_fires(SceneChangeDetector(), fast) == [1.0]  # only the first, before any baseline exists
    assert frame_fires(SceneChangeDetector(), [*fast[:9], 0.9, *fast[9:]]) == [1.0, 9.0]


def test_cooldown_suppresses_a_second_trigger_and_re_arms_after_it() -> None:
    changes = [None, 0.05, 0.05, 0.6, 0.6, 0.05, 0.6, 0.05]
    assert frame_fires(SceneChangeDetector(SceneConfig(cooldown_s=0)), changes) == [3.0, 4.0, 6.0]
    assert frame_fires(SceneChangeDetector(SceneConfig(cooldown_s=1.5)), changes) == [3.0, 6.0]
    assert frame_fires(SceneChangeDetector(SceneConfig(cooldown_s=1.5)), changes, fps=4.0) == [0.75]


def test_drop_ratio_cue_needs_colour_evidence() -> None:
    """A valley of the drop ratio fires with some colour change in its step; the same valley under motion that
    keeps the colours (a pan) does not."""

    def run(colour: float, drop_cue: bool = True) -> list[float]:
        detector = SceneChangeDetector(SceneConfig(cooldown_s=0, drop_cue=drop_cue))
        drops = [0.0, 0.9, 0.92, 0.9, 0.1, 0.9, 0.9]
        fired = []
        for i, d in enumerate(drops):
            detector.frame(float(i), None if i == 0 else (colour if i == 4 else 0.05))
            if (trig := detector.step(update(i, d, reset=i == 0))) is not None:
                fired.append(trig.t)
        return fired

    assert run(colour=0.2) == [4.0]  # 0.2 is under the frame threshold: the drop ratio found it
    assert run(colour=0.05) == []
    assert run(colour=0.2, drop_cue=False) == []


def test_change_spike_fires_under_camera_motion() -> None:
    """Panning keeps nearly every token, so the drop ratio cannot dip; the size of the change still spikes."""
    changes = [0.0, 0.05, 0.06, 0.05, 0.05, 0.30, 0.05, 0.06, 0.05, 0.04, 0.05, 0.28, 0.05]
    detector = SceneChangeDetector(SceneConfig(cooldown_s=0))
    fired = []
    for i, c in enumerate(changes):
        detector.frame(float(i), None if i == 0 else (0.18 if c > 0.2 else 0.05))
        if (trig := detector.step(update(i, 0.02, i == 0, change=c))) is not None:
            fired.append(trig.t)
    assert fired == [5.0, 11.0]


def test_scene_settings_are_validated_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="frame_threshold"):
        SceneConfig(frame_threshold=0.0)
    with pytest.raises(ValidationError, match="change_ratio"):
        SceneConfig(change_ratio=1.0)


def test_colour_histogram_is_a_distribution_and_ignores_motion() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    hist = colour_histogram(image)
    assert hist.shape == (512,) and hist.sum() == pytest.approx(1.0)
    shifted = np.roll(image, 40, axis=1)  # the same content moved: the same colours
    assert 0.5 * np.abs(colour_histogram(shifted) - hist).sum() < 0.05
    other = np.clip(image.astype(int) // 2 + 100, 0, 255).astype(np.uint8)
    assert 0.5 * np.abs(colour_histogram(other) - hist).sum() > 0.5


def test_perception_reports_a_signal_for_every_frame_before_steps_merge(tmp_path) -> None:
    clip = write_clip(tmp_path / "cut.mp4", seconds=4, cut_times=(2.0,))
    perception = Perception(PerceptionConfig(fps=2, drop={"mode": "pixel"}))
    signals = []
    for frame in VideoFileSource(clip.path, fps=2):
        perception.push(frame)
        signals.append(perception.frame_signal)
    assert [s.t for s in signals] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert signals[0].colour_change is None
    by_t = {s.t: s.colour_change for s in signals[1:]}
    assert by_t[2.0] > 0.5 and max(v for t, v in by_t.items() if t != 2.0) < 0.1  # the cut frame, mid-step


def test_instruction_rising_edge_with_hysteresis() -> None:
    m = InstructionMonitor("a person enters", interval_s=2.0, on=0.6, off=0.4)
    seen = [m.observe(t, p) is not None for t, p in enumerate([0.1, 0.7, 0.8, 0.5, 0.65, 0.3, 0.9])]
    assert seen == [False, True, False, False, False, False, True]
    assert m.fired_until(3.0) == 1 and m.fired_until(6.0) == 2 and m.active_at(3.0) and not m.active_at(5.0)
    with pytest.raises(ValueError, match="off < on"):
        InstructionMonitor("x", on=0.3, off=0.5)
    with pytest.raises(ValueError, match="empty"):
        InstructionMonitor("  ")
    with pytest.raises(ValueError, match="interval_s"):
        InstructionMonitor("x", interval_s=0)


def test_prompts_come_from_the_config_then_the_family_then_the_defaults(monkeypatch) -> None:
    monitor = InstructionMonitor("tell me when a dog appears.")
    assert monitor.question == "Is this true right now: tell me when a dog appears?"
    assert PromptsConfig().resolve("qwen2_5_vl") == PROMPT_DEFAULTS["default"]
    monkeypatch.setitem(PROMPT_DEFAULTS, "fam", {"probe": "Do you see this: {instruction}?"})
    resolved = PromptsConfig(narration="What changed?").resolve("fam")
    assert resolved["probe"] == "Do you see this: {instruction}?" and resolved["narration"] == "What changed?"
    assert monitor.question_for(resolved["probe"]) == "Do you see this: tell me when a dog appears?"
    assert monitor.prompt_for("Say: {instruction}") == "Say: tell me when a dog appears."
    with pytest.raises(ValidationError, match="placeholder"):
        PromptsConfig(probe="Is {thing} there?")


@pytest.mark.slow
def test_scene_cuts_in_a_real_decoded_clip(tmp_path) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", seconds=40, cut_times=(7.0, 15.5, 24.0, 31.0))
    for fps, per_step in ((1, 2), (4, 1)):
        perception = Perception(PerceptionConfig(fps=fps, frames_per_step=per_step, drop={"mode": "pixel"}))
        detector = SceneChangeDetector()
        fired = []
        for frame in VideoFileSource(clip.path, fps=fps):
            update_ = perception.push(frame)
            signal = perception.frame_signal
            if (trig := detector.frame(signal.t, signal.colour_change)) is not None:
                fired.append(trig.t)
            if update_ is not None and (trig := detector.step(update_)) is not None:
                fired.append(trig.t)
        score = score_triggers(fired, clip.cut_times, tolerance_s=1.0, duration_s=clip.seconds)
        assert score.f1 == 1.0 and score.false_alarms_per_min == 0.0, (fps, per_step, fired)


def test_timing_score_exact() -> None:
    s = score_triggers([1.0, 5.2, 9.0, 20.0], [1.5, 5.0, 12.0], tolerance_s=1.0, duration_s=60.0)
    assert (s.true_positives, s.false_positives, s.false_negatives) == (2, 2, 1)
    assert s.precision == 0.5 and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(4 / 7)
    assert s.mean_abs_time_diff_s == pytest.approx(0.35) and s.false_alarms_per_min == 2.0
    one = score_triggers([1.0, 1.1], [1.05], tolerance_s=0.5, duration_s=30)
    assert one.true_positives == 1 and one.false_positives == 1
    with pytest.raises(ValueError):
        score_triggers([], [], -1, 10)
