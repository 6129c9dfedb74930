"""A user's mistakes on the ``vigil`` command line: exit status 2, one line on stderr, no traceback, nothing loaded.

Most cases call the command's ``main`` in this process (the same code a shell runs, without the start-up cost);
the extras and the version run ``python -m serving.cli`` as a user would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving.cli.core import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors and --print-config
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("vigil: note")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vigil: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    from evaluation.synthetic import write_clip

    return write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", seconds=2, fps=4, width=64, height=48).path


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command tries to load a model (mistakes must be caught before)."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded before the mistake was reported")

    monkeypatch.setattr("serving.runtime.load_model", refuse)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_frames_per_step_over_the_models_patch(capsys, clip, no_model_load, tiny_model_dir) -> None:
    line = one_line_error(*run(capsys, "watch", clip, "--frames-per-step", "3")[::2])
    assert "--frames-per-step 3" in line and "1 to 2" in line
    line = one_line_error(*run(capsys, "watch", clip, "--model", str(tiny_model_dir), "--frames-per-step", "4")[::2])
    assert "temporal patch size 2" in line


def test_missing_local_model_directory_is_named(capsys, clip, no_model_load, tmp_path) -> None:
    for path in ("/no/such/checkpoint", "./not-here", str(tmp_path / "missing")):
        line = one_line_error(*run(capsys, "watch", clip, "--model", path)[::2])
        assert "no such directory" in line and "Repo id" not in line
    (tmp_path / "empty").mkdir()
    line = one_line_error(*run(capsys, "watch", clip, "--model", str(tmp_path / "empty"))[::2])
    assert "no config.json" in line


def test_uncached_hub_id_offline_fails_at_once(capsys, clip, no_model_load, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    line = one_line_error(*run(capsys, "watch", clip, "--model", "someorg/not-cached-model")[::2])
    assert "not in the local Hugging Face cache" in line and "cannot be reached" in line
    line = one_line_error(*run(capsys, "watch", clip, "--model", "bad id with spaces")[::2])
    assert "neither an existing directory nor a Hugging Face id" in line


def test_unreachable_remote_replica(capsys, clip, no_model_load) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    line = one_line_error(*run(capsys, "watch", clip, "--engine", "remote", "--remote-url", url)[::2])
    assert url in line and "no remote replica can be reached" in line


def test_make_clip_bad_cuts(capsys, tmp_path) -> None:
    line = one_line_error(*run(capsys, "make-clip", str(tmp_path / "o.mp4"), "--cuts", "5,abc")[::2])
    assert "--cuts" in line and "'5,abc'" in line
    assert not (tmp_path / "o.mp4").exists()


def test_bad_config_files_and_values(capsys, clip, no_model_load, tmp_path) -> None:
    cases = {
        "missing.yaml": (None, "not found"),
        "syntax.yaml": ("engine: [", "cannot be read"),
        "unknown.toml": ("[engine]\nmax_new_token = 3\n", "engine.max_new_token: Extra inputs are not permitted"),
        "range.json": ('{"memory": {"budget_tokens": 3}}', "memory.budget_tokens"),
        "config.ini": ("[x]", "use a .yaml, .yml, .toml or .json file"),
    }
    for name, (text, expected) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        line = one_line_error(*run(capsys, "watch", clip, "--config", str(tmp_path / name))[::2])
        assert expected in line, line


def test_config_file_env_and_options_layer(capsys, monkeypatch, tmp_path) -> None:
    (tmp_path / "vigil.yaml").write_text(
        "engine:\n  max_new_tokens: 7\n  temperature: 0.5\nserver:\n  port: 9001\n  limits:\n    max_fps: 5\n"
    )
    monkeypatch.setenv("VIGIL_SERVER__PORT", "9002")
    monkeypatch.setenv("VIGIL_SESSION__FRAME_QUEUE", "64")
    monkeypatch.setenv("VIGIL_PERCEPTION__DROP__THRESHOLD", "0.3")
    code, out, err = run(
        capsys, "serve", "--config", str(tmp_path / "vigil.yaml"), "--max-new-tokens", "5", "--api-key", "secret-key-1",
        "--metrics-open", "--print-config",
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(out)
    assert shown["engine"]["max_new_tokens"] == 5  # the option beats the file
    assert shown["engine"]["temperature"] == 0.5  # the file beats the default
    assert shown["server"]["port"] == 9002  # the environment beats the file
    assert shown["server"]["limits"]["max_fps"] == 5.0 and shown["session"]["frame_queue"] == 64
    assert shown["perception"]["drop"]["threshold"] == 0.3
    assert shown["server"]["api_keys"] == ["***"] and "secret-key-1" not in out
    assert shown["server"]["metrics_open"] is True
    monkeypatch.setenv("VIGIL_ENGINE__MAX_NEW_TOKENS", "0")
    line = one_line_error(*run(capsys, "serve", "--print-config")[::2])
    assert "engine.max_new_tokens" in line


def test_version_and_missing_extras_as_a_shell_runs_them(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    out = subprocess.run([sys.executable, "-m", "serving.cli", "--version"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.startswith("vigil ")
    # a Python where the serve and demo extras are not installed: their modules cannot be found
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Missing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('uvicorn', 'gradio'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Missing())\n"
    )
    for argv, extra in ((["serve"], "serve"), (["serve", "--ui"], "serve"), (["demo"], "demo")):
        out = subprocess.run(
            [sys.executable, "-m", "serving.cli", *argv], capture_output=True, text=True, env=env, timeout=120
        )
        line = one_line_error(out.returncode, out.stderr)
        assert f"pip install 'vigil[{extra}]'" in line, line


@pytest.mark.slow
def test_cached_hub_id_loads_offline_when_the_hub_is_unreachable(clip, tiny_model_dir, tmp_path) -> None:
    """A Hugging Face id in the local cache runs on a machine that cannot reach the hub (no retries, no error)."""
    import shutil

    repo = tmp_path / "hub" / "models--someorg--tiny-vl"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "PYTHONPATH": os.getcwd(),
    }
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run(
        [sys.executable, "-m", "serving.cli", "watch", clip, "--model", "someorg/tiny-vl", "--max-new-tokens", "2",
         "--ask", "1:What?", "--jsonl"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    answers = [json.loads(line) for line in out.stdout.splitlines() if '"answer"' in line]
    assert answers and answers[0]["question"] == "What?"
    assert "Traceback" not in out.stderr and "huggingface.co" not in out.stderr
