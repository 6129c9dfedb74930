"""Benchmark video layouts and the run manifest: found as the benchmarks name their files, checked before a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assistant.sources import VideoFileSource
from evaluation import layouts, manifest, ovo_bench, streamingbench
from evaluation.run_cli import ovo_task_groups, parse_tasks
from evaluation.synthetic import clip_frames, write_clip, write_ovo_videos


@pytest.fixture(scope="module")
def ovo_items(shared_data: Path) -> list:
    """Real OVO-Bench items: an EPM and an FPD item (query at 0.03 s) and a REC item with two polls."""
    items = ovo_bench.load_annotations(shared_data / "ovo-bench" / "ovo_bench_subset.json")
    by_id = {it.id: it for it in items}
    return [by_id[8], by_id[1117], by_id[1560]]


@pytest.fixture(scope="module")
def ovo_root(tmp_path_factory: pytest.TempPathFactory, ovo_items: list) -> Path:
    root = tmp_path_factory.mktemp("ovo-data")
    write_ovo_videos(ovo_items, root, layout="both", fps=5, width=64, height=48)
    return root


def test_generated_videos_are_named_as_the_benchmark_releases_them(ovo_root: Path, ovo_items: list) -> None:
    epm = ovo_items[0]
    assert (ovo_root / "src_videos" / epm.video).is_file()
    names = sorted(p.name for p in (ovo_root / "chunked_videos").iterdir())
    assert names == ["1117.mp4", "1560_0.mp4", "1560_1.mp4", "8.mp4"]
    assert layouts.ovo_clip_name(1560, 1) == "1560_1.mp4" and layouts.ovo_clip_name(8, None) == "8.mp4"


def test_a_chunked_clip_is_the_source_up_to_its_query_time(ovo_root: Path, ovo_items: list) -> None:
    epm, fpd, rec = ovo_items  # EPM at 7 s, FPD at 0.03 s, REC polls at 14 and 22 s
    for name, end, video in (
        ("8.mp4", epm.realtime, epm.video),
        ("1117.mp4", 0.03, fpd.video),
        ("1560_1.mp4", 22.0, rec.video),
    ):
        with VideoFileSource(ovo_root / "chunked_videos" / name, fps=5) as clip:
            frames = list(clip)
        assert len(frames) == clip_frames(end, 5)  # every frame before the query time, and none after
        assert frames[-1].t < end
        with VideoFileSource(ovo_root / "src_videos" / video, fps=5, end=end) as source:
            prefix = list(source)
        assert [f.t for f in prefix] == [f.t for f in frames]
        diff = np.abs(prefix[-1].image.astype(int) - frames[-1].image.astype(int)).mean()
        assert diff < 8  # the same picture, encoded twice


def test_ovo_layouts_resolve_every_query(ovo_root: Path, ovo_items: list, tmp_path: Path) -> None:
    queries = ovo_bench.expand_queries(ovo_items)
    chunked = layouts.resolve_ovo(queries, ovo_root, "chunked")
    assert not chunked.missing and all(ref.clip for ref in chunked.found.values())
    assert chunked.found["1560.1"].path == ovo_root / "chunked_videos" / "1560_1.mp4"
    assert chunked.found["1560.1"].source == ovo_items[2].video  # polls of one video share a live pass
    source = layouts.resolve_ovo(queries, ovo_root, "source")
    assert not source.missing and not any(ref.clip for ref in source.found.values())
    assert source.found["8"].path == ovo_root / "src_videos" / ovo_items[0].video
    # only the clips, handed over as the chunked_videos folder itself: auto finds them there
    only = tmp_path / "chunked_videos"
    only.mkdir()
    for p in (ovo_root / "chunked_videos").iterdir():
        (only / p.name).write_bytes(p.read_bytes())
    (only / "1560_0.mp4").unlink()
    auto = layouts.resolve_ovo(queries, only, "auto")
    assert auto.layout == "chunked" and set(auto.missing) == {"1560.0"}
    assert "1 video file(s) missing in the chunked layout" in auto.describe_missing()
    assert str(auto.missing["1560.0"]).endswith("chunked_videos/1560_0.mp4")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        layouts.resolve_ovo(queries, tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown layout"):
        layouts.resolve_ovo(queries, ovo_root, "zipped")


def test_streamingbench_layouts(shared_data: Path, tmp_path: Path) -> None:
    real = streamingbench.load_questions(shared_data / "streamingbench" / "questions_real_sample.json")
    pro = streamingbench.load_questions(shared_data / "streamingbench" / "questions_proactive_sample.json")
    q, p = real[0], pro[0]  # ./videos/sample_348_real.mp4 at 00:00:31; ./videos/sample_17_proactive.mp4
    # flat: src/data/videos/sample_348_real.mp4 (what the benchmark's move_video.py makes)
    write_clip(tmp_path / "flat" / "videos" / "sample_348_real.mp4", seconds=1, fps=2, width=32, height=32)
    write_clip(tmp_path / "flat" / "videos" / "sample_17_proactive.mp4", seconds=1, fps=2, width=32, height=32)
    flat = layouts.resolve_streamingbench([q, p], tmp_path / "flat")
    assert flat.layout == "flat" and not flat.missing and not flat.found[q.key].clip
    # samples: the released folders, real/sample_348/video.mp4
    write_clip(tmp_path / "rel" / "real" / "sample_348" / "video.mp4", seconds=1, fps=2, width=32, height=32)
    rel = layouts.resolve_streamingbench([q, p], tmp_path / "rel")
    assert rel.layout == "samples" and rel.found[q.key].path.parts[-3:] == ("real", "sample_348", "video.mp4")
    assert set(rel.missing) == {p.key}
    # clips: the harness's prefix clips, videos/tmp/sample_348_real_0_31.mp4; proactive needs the whole video
    write_clip(
        tmp_path / "clips" / "videos" / "tmp" / "sample_348_real_0_31.mp4", seconds=1, fps=2, width=32, height=32
    )
    clips = layouts.resolve_streamingbench([q, p], tmp_path / "clips")
    assert clips.layout == "clips" and clips.found[q.key].clip and set(clips.missing) == {p.key}


def test_tasks_select_tasks_and_categories() -> None:
    groups = ovo_task_groups()
    assert parse_tasks("epm, forward", groups) == {"EPM", "REC", "SSR", "CRR"}
    assert parse_tasks(None, groups) is None
    with pytest.raises(ValueError, match="unknown task 'XYZ'"):
        parse_tasks("EPM,XYZ", groups)


def _manifest(tmp_path: Path, config, **changes) -> dict:
    anno = tmp_path / "anno.json"
    if not anno.exists():
        anno.write_text("[]")
    base = {"mode": "live", "layout": "chunked", "model": {"name": "m", "path": "/x", "sha256": "abc"}}
    base.update(changes)
    return manifest.build_manifest(
        benchmark="ovo",
        annotations=[anno],
        videos=tmp_path,
        config=config,
        run={"limit": changes.get("limit")},
        **{k: base[k] for k in ("mode", "layout", "model")},
    )


def test_resume_only_with_the_same_settings(tmp_path: Path) -> None:
    from assistant.config import VigilConfig

    out = tmp_path / "out"
    config = VigilConfig()
    first = _manifest(tmp_path, config)
    assert manifest.prepare_out_dir(out, first) is False
    (out / "answers.jsonl").write_text('{"key": "8", "response": "A"}\n')
    # a smoke run's subset and how many ran at once may differ: the answers are the same
    assert manifest.prepare_out_dir(out, _manifest(tmp_path, config, limit=5)) is True
    other = config.model_copy(update={"perception": config.perception.model_copy(update={"fps": 2.0})})
    changed = _manifest(tmp_path, other, mode="replay", model={"name": "m", "path": "/y", "sha256": "def"})
    with pytest.raises(manifest.ManifestMismatch) as info:
        manifest.prepare_out_dir(out, changed)
    message = str(info.value)
    assert "config.perception.fps (1.0 → 2.0)" in message and "mode (live → replay)" in message
    assert "model.sha256 (changed)" in message and "--overwrite" in message
    assert (out / "answers.jsonl").read_text()  # nothing was harmed
    (out / "vigil_ovo_replay.json").write_text("{}")
    assert manifest.prepare_out_dir(out, changed, overwrite=True, outputs=["vigil_ovo_replay.json"]) is False
    assert not (out / "answers.jsonl").exists() and not (out / "vigil_ovo_replay.json").exists()
    assert manifest.read_manifest(out)["mode"] == "replay"
    # the same model files under another name are the same model; answers without a manifest are refused
    (out / "answers.jsonl").write_text('{"key": "8", "response": "A"}\n')
    renamed = _manifest(tmp_path, other, mode="replay", model={"name": "./ckpt", "path": "/z", "sha256": "def"})
    assert manifest.prepare_out_dir(out, renamed) is True
    (out / "manifest.json").unlink()
    with pytest.raises(manifest.ManifestMismatch, match=r"without a manifest\.json"):
        manifest.prepare_out_dir(out, renamed)


def test_model_and_annotation_hashes(tmp_path: Path, vigil_home: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"a": 1}))
    (ckpt / "weights.bin").write_bytes(b"\0" * 1000)
    first = manifest.model_fingerprint(str(ckpt))
    assert first["sha256"] == manifest.tree_sha256(ckpt) and first["path"] == str(ckpt.resolve())
    (ckpt / "weights.bin").write_bytes(b"\1" * 1000)
    assert manifest.model_fingerprint(str(ckpt))["sha256"] != first["sha256"]
    assert manifest.model_fingerprint("no/such-model")["sha256"] is None
