"""``benchmark.py latency`` and ``runtimes``: their JSON rows (runtime names, batch, threads)."""

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


def test_runtimes_picks_runtimes_and_batch():
    result = run_benchmark(
        "runtimes",
        "--model=mobilenet_v3_small_075",
        "--image_size=32",
        "--num_classes=10",
        "--runtimes=tflite_int8",
        "--runtimes=onnxruntime",
        "--batch_size=2",
        "--num_threads=1",
        "--repeats=1",
        "--calls=1",
        "--warmup=1",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json_lines(result.stdout)
    assert (row["model"], row["batch_size"], row["threads"]) == ("mobilenet_v3_small_075", 2, 1)
    assert {key for key in row if key.endswith("_ms")} == {"tflite_int8_ms", "onnxruntime_ms"}
    assert row["tflite_int8_ms"] > 0 and row["onnxruntime_ms"] > 0
