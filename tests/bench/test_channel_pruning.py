"""``benchmark.py channel_pruning``: dense, pruned and reference models timed in one run."""

import pytest

from tests.bench.cli import json_lines, run_benchmark


@pytest.mark.slow
def test_json_contract_with_a_reference():
    result = run_benchmark(
        "channel_pruning",
        "--model=mobilenet_v1_025",
        "--reference=mobilenet_v1_025",
        "--skip=conv_pw_1?",  # conv_pw_10..13 kept whole (fnmatch)  # the dense model again: same cost, same size
        "--image_size=32",
        "--num_classes=5",
        "--num_threads=1",
        "--repeats=1",
        "--calls=1",
        "--warmup=1",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json_lines(result.stdout)
    assert row["pruned_macs"] <= 0.5 * row["dense_macs"]
    assert row["pruned_params"] < row["dense_params"]
    for runtime in ("tflite", "tf", "tf_frozen"):
        ratio = row[f"pruned_{runtime}_ms"] / row[f"dense_{runtime}_ms"]
        assert row[f"{runtime}_ratio"] == pytest.approx(ratio)
    (reference,) = row["references"]
    assert reference["model"] == "mobilenet_v1_025"
    assert (reference["macs"], reference["params"]) == (row["dense_macs"], row["dense_params"])
    for runtime in ("tf", "tf_frozen"):
        ratio = reference[f"{runtime}_ms"] / row[f"dense_{runtime}_ms"]
        assert reference[f"{runtime}_ratio"] == pytest.approx(ratio)
