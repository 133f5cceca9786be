"""Smoke tests of the model-level benchmark commands: they run, and their numbers are consistent.

Speed itself is never asserted (benchmark.py measures it); these check the plumbing and the JSON
contract that scripts rely on.
"""

import pytest

from tests.bench.cli import json_lines, run_benchmark


@pytest.mark.slow
def test_throughput_compare_keras_json_contract():
    result = run_benchmark(
        "throughput",
        "--model=mobilenet_v1_025,fd_mobilenet_025",
        "--image_size=32",
        "--batch_size=2",
        "--num_classes=5",
        "--repeats=1",
        "--steps=1",
        "--warmup=1",
        "--compare_keras",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["model"]: row for row in json_lines(result.stdout)}
    assert set(rows) == {"mobilenet_v1_025", "fd_mobilenet_025"}
    ours_and_keras = rows["mobilenet_v1_025"]
    for key in (
        "model",
        "train_img_s",
        "keras_train_img_s",
        "infer_img_s",
        "keras_infer_img_s",
        "ratio_train",
        "ratio_infer",
    ):
        assert key in ours_and_keras, key
    for kind in ("train", "infer"):
        expected = ours_and_keras[f"{kind}_img_s"] / ours_and_keras[f"keras_{kind}_img_s"]
        assert ours_and_keras[f"ratio_{kind}"] == pytest.approx(expected, rel=1e-6)
        timings = ours_and_keras[f"{kind}_ms_step"]
        assert timings["min"] <= timings["median"] <= timings["max"]
    # keras.applications has no FD-MobileNet: ours alone, no ratio invented.
    assert "ratio_train" not in rows["fd_mobilenet_025"]
    assert rows["fd_mobilenet_025"]["train_img_s"] > 0


def test_unknown_model_is_a_clean_error():
    result = run_benchmark("throughput", "--model=mobilenet_v9")
    assert result.returncode != 0
    assert "Unknown model 'mobilenet_v9'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_lists_the_valid_ones():
    result = run_benchmark("speed")
    assert result.returncode == 2
    assert "unknown command 'speed'" in result.stderr and "throughput" in result.stderr


@pytest.mark.slow
def test_cost_vs_time_reports_macs_from_layer_costs():
    result = run_benchmark(
        "cost_vs_time",
        "--models=mobilenet_v1_025",
        "--image_size=32",
        "--repeats=1",
        "--steps=1",
        "--matmul_size=256",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json_lines(result.stdout)
    # Independent count of MobileNet v1 0.25 at 32x32: stem + 13 separable blocks + classifier.
    channels = [8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256]
    strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    size = 16  # after the stride-2 stem
    macs = 3 * 3 * 3 * 8 * size * size
    for c_in, c_out, s in zip(channels[:-1], channels[1:], strides, strict=True):
        size = -(-size // s)
        macs += (9 * c_in + c_in * c_out) * size * size
    macs += 256 * 1000
    assert row["macs"] == macs
    assert row["achieved_gflops"] == pytest.approx(2 * macs / (row["latency_ms"] / 1e3) / 1e9)
