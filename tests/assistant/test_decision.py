"""Decision policies are causal and fire once per event."""

from __future__ import annotations

import pytest
import torch

from assistant.config import PerceptionConfig
from assistant.decision import InstructionMonitor, SceneChangeDetector
from assistant.events import PerceptionUpdate
from assistant.perception import Perception
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


def fire_times(detector: SceneChangeDetector, drops: list[float]) -> list[float]:
    out = []
    for i, d in enumerate(drops):
        trig = detector.step(update(i, d, reset=i == 0))
        if trig:
            out.append(trig.t)
    return out


def test_valleys_fire_once_each() -> None:
    drops = [0.0, 0.9, 0.92, 0.9, 0.1, 0.9, 0.91, 0.9, 0.9, 0.05, 0.0, 0.9, 0.9]
    assert fire_times(SceneChangeDetector(cooldown_s=0), drops) == [4.0, 9.0]


def test_cooldown_and_rearm() -> None:
    drops = [0.0, 0.9, 0.9, 0.9, 0.1, 0.9, 0.1, 0.9, 0.9, 0.9, 0.1]
    assert fire_times(SceneChangeDetector(cooldown_s=3.0), drops) == [4.0, 10.0]


def test_gradual_motion_does_not_fire() -> None:
    drops = [0.0] + [0.9 - 0.02 * i for i in range(20)]
    assert fire_times(SceneChangeDetector(), drops) == []


def test_change_spike_fires_under_camera_motion() -> None:
    """Panning keeps nearly every token, so the drop ratio cannot dip; the size of the change still spikes."""
    changes = [0.0, 0.05, 0.06, 0.05, 0.05, 0.30, 0.05, 0.06, 0.05, 0.04, 0.05, 0.28, 0.05]
    detector = SceneChangeDetector(cooldown_s=0)
    fired = [t.t for i, c in enumerate(changes) if (t := detector.step(update(i, 0.02, i == 0, change=c)))]
    assert fired == [5.0, 11.0]


def test_detector_validation() -> None:
    with pytest.raises(ValueError, match="sensitivity"):
        SceneChangeDetector(sensitivity=0.0)


def test_instruction_rising_edge_with_hysteresis() -> None:
    m = InstructionMonitor("a person enters", interval_s=2.0, on=0.6, off=0.4)
    seen = [m.observe(t, p) is not None for t, p in enumerate([0.1, 0.7, 0.8, 0.5, 0.65, 0.3, 0.9])]
    assert seen == [False, True, False, False, False, False, True]
    assert m.due(10.0, scene_changed=False) and not m.due(6.5, scene_changed=False) and m.due(6.5, True)
    with pytest.raises(ValueError, match="off < on"):
        InstructionMonitor("x", on=0.3, off=0.5)
    with pytest.raises(ValueError, match="empty"):
        InstructionMonitor("  ")


@pytest.mark.slow
def test_scene_cuts_in_a_real_decoded_clip(tmp_path) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", seconds=40, cut_times=(7.0, 15.5, 24.0, 31.0))
    perception = Perception(PerceptionConfig(fps=4, frames_per_step=1, drop={"mode": "pixel"}))
    detector = SceneChangeDetector()
    fired = [t.t for u in perception.run(VideoFileSource(clip.path, fps=4)) if (t := detector.step(u))]
    score = score_triggers(fired, clip.cut_times, tolerance_s=0.5, duration_s=clip.seconds)
    assert score.f1 == 1.0 and score.false_alarms_per_min == 0.0


def test_timing_score_exact() -> None:
    s = score_triggers([1.0, 5.2, 9.0, 20.0], [1.5, 5.0, 12.0], tolerance_s=1.0, duration_s=60.0)
    assert (s.true_positives, s.false_positives, s.false_negatives) == (2, 2, 1)
    assert s.precision == 0.5 and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(4 / 7)
    assert s.mean_abs_time_diff_s == pytest.approx(0.35) and s.false_alarms_per_min == 2.0
    one = score_triggers([1.0, 1.1], [1.05], tolerance_s=0.5, duration_s=30)
    assert one.true_positives == 1 and one.false_positives == 1
    with pytest.raises(ValueError):
        score_triggers([], [], -1, 10)
