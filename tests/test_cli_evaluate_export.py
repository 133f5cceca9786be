"""evaluate.py and export.py as a user runs them: train (trainer.run), export every format,
evaluate every kind; the numbers agree with the training run's own; errors exit non-zero with a
clear message."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import glob  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from tests import digits_model  # noqa: E402
from tests.model_checks import REPO_ROOT  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")


def _start(script: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, script, *flags], cwd=REPO_ROOT, env=ENV, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return digits_model.trained_digits(tmp_path_factory)


@pytest.fixture(scope="module")
def run_workdir(tmp_path_factory):
    """A real (short) training run: MobileNet v1 0.25 on digits at 32 px, 40 steps."""
    import trainer
    from configs import recipes

    config = recipes.digits("mobilenet_v1_025", image_size=32, epochs=1)
    config.train.steps_per_epoch, config.train.batch_size, config.train.verbose = 40, 32, 0
    config.optim.warmup_epochs = 0.0
    config.export.formats = "keras"
    workdir = str(tmp_path_factory.mktemp("run"))
    trainer.run(config, workdir)
    return workdir


@pytest.mark.slow
def test_export_then_evaluate_every_kind_gives_the_runs_numbers(run_workdir, trained, tmp_path):
    # The trainer wrote export/model.keras; export.py adds the float formats. (A 40-step model
    # sits near decision boundaries, so int8 parity is tested on the well-trained model in
    # tests/trainer/test_export.py instead.)
    formats = ("saved_model", "tflite")
    code, out, err = _finish(_start(
        "export.py", f"--workdir={run_workdir}", f"--formats={','.join(formats)}",
        "--parity_examples=200",
    ))  # fmt: skip
    assert code == 0, err[-3000:]
    export_dir = os.path.join(run_workdir, "export")
    for name in formats:
        assert f"| {name} | " in out, out
    assert "| NO |" not in out

    tflites = sorted(glob.glob(os.path.join(export_dir, "*.tflite")))
    assert len(tflites) == 1
    code, out, err = _finish(_start(
        "evaluate.py", f"--model={run_workdir},{export_dir}/saved_model",
        f"--model={export_dir}/*.tflite", f"--model={trained.keras_path}", "--json",
        "--batch_size=50", "--latency_iterations=2", f"--confusion_png={tmp_path}/c.png",
    ))  # fmt: skip
    assert code == 0, err[-3000:]
    results = {r["model"]: r for r in map(json.loads, out.strip().splitlines())}
    assert list(results) == [run_workdir, f"{export_dir}/saved_model", *tflites, trained.keras_path]
    for result in results.values():
        for key in ("top1", "top5", "loss", "examples", "latency_ms_b1", "latency_ms_bN"):
            assert isinstance(result[key], (int, float)), key
        assert result["examples"] == 360 and len(result["per_class"]) == 10

    with open(os.path.join(run_workdir, "metrics.json")) as f:
        final = json.load(f)["final"]
    for path in (run_workdir, f"{export_dir}/saved_model", f"{export_dir}/model.tflite"):
        assert results[path]["top1"] == pytest.approx(final["val_top1"], abs=1e-6), path
        assert results[path]["top5"] == pytest.approx(final["val_top5"], abs=1e-6), path
        assert results[path]["loss"] == pytest.approx(final["val_loss"], rel=1e-4), path
    # A bare .keras file: digits at its own 16 px input, Inception preprocessing by default.
    assert results[trained.keras_path]["input_size"] == digits_model.IMAGE_SIZE
    assert results[trained.keras_path]["top1"] == pytest.approx(trained.reference["top1"], abs=1e-6)
    assert sorted(os.listdir(tmp_path)) == [f"c_{i}.png" for i in range(len(results))]


@pytest.mark.slow
def test_errors_exit_non_zero_with_a_clear_message(trained, tmp_path):
    missing = str(tmp_path / "missing.keras")
    processes = [
        _start("evaluate.py", f"--model={missing}"),
        _start("evaluate.py", f"--model={trained.paths['tflite']}", "--data.source=synthetic",
               "--data.num_classes=7"),
        _start("export.py"),
        _start("export.py", f"--workdir={trained.keras_path}"),
    ]  # fmt: skip
    (missing_code, _, missing_err), (classes_code, _, classes_err), (flags_code, _, flags_err), (
        workdir_code, _, workdir_err) = map(_finish, processes)  # fmt: skip

    assert missing_code != 0 and f"Model path '{missing}' does not exist" in missing_err
    assert classes_code != 0
    assert "predicts 10 classes but the data 'synthetic' has 7 classes" in classes_err
    assert flags_code != 0 and "exactly one of --workdir=DIR or --model=PATH" in flags_err
    assert workdir_code != 0 and "has no config.json; for a model file use --model" in workdir_err
