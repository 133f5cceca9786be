"""``benchmark.py latency``: one row per model with its TensorFlow and TFLite latency."""

from tests.bench.cli import json_lines, run_benchmark


def test_latency_json_contract():
    result = run_benchmark(
        "latency",
        "--models=mobilenet_v3_small_075",
        "--image_size=32",
        "--num_threads=1",
        "--repeats=1",
        "--calls=1",
        "--warmup=1",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json_lines(result.stdout)
    assert (row["model"], row["image_size"], row["batch_size"], row["num_threads"]) == (
        "mobilenet_v3_small_075",
        32,
        1,
        1,
    )
    assert row["tf_ms"] > 0 and row["tflite_ms"] > 0 and row["macs"] > 0
