"""The scene bench: measured ground truth on real spliced clips, every setting scored, PySceneDetect beside it."""

from __future__ import annotations

import pytest

from evaluation.bench_scene import format_scene_grid, measure_cuts, merge_close, run_scene_grid, splice_clips


def test_close_cuts_count_as_one_change() -> None:
    assert merge_close([5.0, 1.2, 9.7, 10.0, 10.4, 11.5]) == [1.2, 5.0, 9.7, 11.5]


@pytest.mark.slow
def test_real_clips_spliced_are_scored_at_each_setting(real_clips, tmp_path) -> None:
    video = tmp_path / "spliced.mp4"
    duration = splice_clips([real_clips["carphone_pristine"], real_clips["bikes"]], video, repeat=1)
    cuts = measure_cuts(video)
    # the junction at 4 s and the bikes clip's own cuts (looked at frame by frame: 1.2, 3.04, 5.48, 7.48, 9.68 s)
    assert cuts == pytest.approx([4.0, 5.2, 7.1, 9.5, 11.5, 13.7], abs=0.11)
    results = run_scene_grid(video, [(1.0, 2), (4.0, 1)])
    assert [(r.fps, r.frames_per_step) for r in results] == [(1.0, 2), (4.0, 1)]
    assert all(r.cuts_measured and r.duration_s == pytest.approx(duration, abs=0.2) for r in results)
    for r in results:
        at_1s = next(s for s in r.scores if s["tolerance_s"] == 1.0)
        assert at_1s["f1"] >= 0.9 and at_1s["false_positives"] == 0, r.trigger_times
        assert all(t <= r.duration_s for t in r.trigger_times)
        assert set(r.yardsticks) == {"content", "adaptive"}  # PySceneDetect, scored the same way
    table = format_scene_grid(results)
    assert "| 1 | 2 (default) |" in table and "PySceneDetect content" in table
