"""What a new user sees: a quiet stderr, one progress line per epoch in a log file, a closing
summary that names the phone-ready file, and that file scoring the run's own numbers."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.model_checks import REPO_ROOT

# What TensorFlow's C++ side prints on a CPU-only machine before any logging is configured.
NATIVE_NOISE = ("absl::InitializeLog", "Could not find cuda drivers", "cuInit", "XNNPACK delegate")


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,  # stdout and stderr are pipes, as when redirected to files
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """The quickstart's recipe, shortened: 2 epochs of 12 steps."""
    workdir = str(tmp_path_factory.mktemp("first") / "run")
    result = _run(
        "train.py",
        "--config=configs/default.py",
        "--config.train.epochs=2",
        "--config.train.steps_per_epoch=12",
        f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


@pytest.mark.slow
def test_a_redirected_run_is_quiet_and_writes_one_line_per_epoch(quickstart_run):
    workdir, result = quickstart_run
    for noise in NATIVE_NOISE:
        assert noise not in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    progress = [line for line in result.stdout.splitlines() if re.match(r"^12/12 - ", line)]
    assert len(progress) == 2, result.stdout  # one line per epoch, no redrawn bar
    assert "\r" not in result.stdout and "\b" not in result.stdout

    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    summary = metrics["summary"]
    assert summary["params"] > 0 and summary["macs"] > 0 and summary["image_size"] == 32
    assert {"keras", "saved_model", "tflite", "tflite_int8"} == set(summary["files"])
    for fmt in ("tflite", "tflite_int8"):
        entry = summary["files"][fmt]
        assert entry["bytes"] == os.path.getsize(os.path.join(workdir, entry["path"]))
        assert entry["latency_ms_b1"] > 0
    lines = result.stdout.strip().splitlines()
    shipped = os.path.join(workdir, summary["files"]["tflite_int8"]["path"])
    assert lines[-1] == f"Evaluate it: python evaluate.py --model={shipped}"
    assert any("model_int8.tflite" in line and "ms per image" in line for line in lines[-6:])


@pytest.mark.slow
def test_the_shipped_tflite_files_score_the_runs_validation_top1(quickstart_run):
    workdir, _ = quickstart_run
    export = os.path.join(workdir, "export")
    result = _run(
        "evaluate.py",
        f"--model={export}/model.tflite,{export}/model_int8.tflite",
        "--json",
        "--latency_iterations=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for noise in NATIVE_NOISE:
        assert noise not in result.stderr
    scores = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    with open(os.path.join(workdir, "metrics.json")) as f:
        val_top1 = json.load(f)["final"]["val_top1"]
    float_top1, int8_top1 = (score["top1"] for score in scores)
    assert float_top1 == pytest.approx(val_top1, abs=1e-6)
    # 24 steps leave logits near decision boundaries: int8 may flip a few of the 360 images.
    # The full quickstart's figure (30 epochs) is in README.md.
    assert int8_top1 == pytest.approx(val_top1, abs=0.02)


def test_verbosity_brings_the_native_logs_back():
    code = "import tensorflow as tf; tf.config.list_physical_devices()"
    script = f"from deploy import console; console.quiet_native_logs(); {code}"
    quiet = _run("-c", script)
    loud = _run("-c", script, env={"LIGHTNETS_NATIVE_LOGS": "1"})
    assert quiet.returncode == loud.returncode == 0
    assert not any(noise in quiet.stderr for noise in NATIVE_NOISE), quiet.stderr
    if "absl::InitializeLog" not in loud.stderr:
        pytest.skip("this TensorFlow prints no native start-up lines here")
    assert any(noise in loud.stderr for noise in NATIVE_NOISE)


def test_the_native_log_filter_knows_what_to_drop_and_when_to_step_aside():
    from deploy import console

    assert console.NATIVE_NOISE.match(
        "E0000 00:00:1796.05 3781 cuda_platform.cc:52] failed call to cuInit: INTERNAL: (303)"
    )
    for kept in ("Traceback (most recent call last):", "W1202 loop.py:20] The loss became NaN"):
        assert not console.NATIVE_NOISE.match(kept)
    assert console._wants_native_logs(["train.py", "--verbosity=1"])
    assert console._wants_native_logs(["train.py", "-v", "2"])
    assert not console._wants_native_logs(["train.py", "--verbosity=0", "--config.x=1"])
    with open(os.devnull, "w") as log_file:
        assert console.progress_verbosity(None, stream=log_file) == 2
    assert console.progress_verbosity(0) == 0
