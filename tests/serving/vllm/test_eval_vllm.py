"""``vigil eval ovo run`` over the in-process vLLM engine and over a real ``vllm serve`` (the remote engine), on
generated OVO-Bench chunked clips of three real queries, retimed short (EPM at 4 s, REC polled at 3 and 6 s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here (the .ci/vllm environment has it)")

from evaluation import ovo_bench
from evaluation.synthetic import write_ovo_videos
from serving.cli.core import main

pytestmark = pytest.mark.vllm

SERVED_NAME = "tiny-served"
KEYS = {"8", "1560.0", "1560.1"}


@pytest.fixture(scope="module")
def ovo_clips(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Path]:
    """Two real OVO-Bench items and their videos in the released chunked layout."""
    root = tmp_path_factory.mktemp("ovo-vllm")
    records = {r["id"]: r for r in json.loads((shared_data / "ovo-bench" / "ovo_bench_subset.json").read_text())}
    anno = root / "anno.json"
    epm, rec = dict(records[8], realtime=4), dict(records[1560])
    rec["test_info"] = [dict(rec["test_info"][0], realtime=3), dict(rec["test_info"][1], realtime=6)]
    anno.write_text(json.dumps([epm, rec]))
    write_ovo_videos(ovo_bench.load_annotations(anno), root / "data", layout="chunked", fps=2, width=64, height=48)
    return anno, root / "data"


def _eval(anno: Path, videos: Path, out: Path, *engine: str) -> int:
    argv = ["eval", "ovo", "run", "--anno", str(anno), "--videos", str(videos), "--out", str(out)]
    options = ["--layout", "chunked", "--max-new-tokens", "3", "--fps", "1", "--budget", "2048", "--concurrency", "2"]
    return main([*argv, *options, *engine])


def _answers(out: Path) -> dict[str, str]:
    return {r["key"]: r["response"] for r in map(json.loads, (out / "answers.jsonl").read_text().splitlines())}


def _check_run(out: Path, mode: str) -> dict:
    """The run answered every query once and wrote the official file; its manifest."""
    answers = _answers(out)
    assert set(answers) == KEYS and all(isinstance(a, str) for a in answers.values())
    assert len((out / "answers.jsonl").read_text().splitlines()) == len(KEYS)  # each query answered once
    report = json.loads((out / f"report_{mode}.json").read_text())
    assert report["answered"] == len(KEYS) and report["failed_videos"] == []
    assert report["prefill_tokens"] > 0 and report["seconds_per_query"] > 0
    assert ovo_bench.load_results(out / f"vigil_ovo_{mode}.json").query_count == len(KEYS)
    return json.loads((out / "manifest.json").read_text())


def test_eval_run_on_the_in_process_vllm_engine(ovo_clips, tmp_path, vigil_home) -> None:
    anno, videos = ovo_clips
    out = tmp_path / "vllm"
    engine = ["--engine", "vllm", "--enforce-eager", "--max-model-len", "8192", "--mode", "live"]
    assert _eval(anno, videos, out, *engine) == 0
    made = _check_run(out, "live")
    options = made["config"]["engine"]
    assert options["kind"] == "vllm" and options["vllm"]["visual_input"] == "kept"
    assert options["vllm"]["enforce_eager"] is True and options["vllm"]["max_model_len"] == 8192
    assert made["run"]["concurrency"] == 2


def test_eval_run_on_a_remote_vllm_serve(ovo_clips, tmp_path, vigil_home, vllm_server, capsys) -> None:
    anno, videos = ovo_clips
    out = tmp_path / "remote"
    engine = ["--engine", "remote", "--remote-url", vllm_server, "--remote-model", SERVED_NAME, "--mode", "replay"]
    assert _eval(anno, videos, out, *engine, "--remote-api-key", "not-needed") == 0
    made = _check_run(out, "replay")
    options = made["config"]["engine"]
    assert options["kind"] == "remote" and options["remote"]["served_model"] == SERVED_NAME
    # where the replicas are and their key do not decide answers: not recorded, not compared on resume
    assert "urls" not in options["remote"] and "api_key" not in options["remote"]
    assert "not-needed" not in (out / "manifest.json").read_text()
    # a replica that does not serve the model: exit 2, one line with the server's answer, no answer recorded
    capsys.readouterr()
    bad = ["--engine", "remote", "--remote-url", vllm_server, "--remote-model", "missing-model", "--mode", "replay"]
    assert _eval(anno, videos, tmp_path / "bad", *bad) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("vigil eval: error: the remote engine failed:") and "HTTP 404" in last
    assert "missing-model" in last and "rerun to resume" in last
    assert not (tmp_path / "bad" / "answers.jsonl").exists() or _answers(tmp_path / "bad") == {}
