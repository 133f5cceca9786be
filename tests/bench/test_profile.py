"""``benchmark.py profile``: op times come out of a real trace, split into the right phases."""

import json

import pytest

from tests.bench.cli import json_lines, run_benchmark


def test_phase_of_names_gradients_updates_and_forward_ops():
    from bench.profile import phase_of

    assert phase_of("gradient_tape/mobilenet/conv_dw_1/depthwise/Backprop") == "backward"
    assert phase_of("SGD/mul_12") == "optimizer"
    assert phase_of("mobilenet/conv_dw_1/depthwise") == "forward"
    # A layer merely named like an optimizer is still forward.
    assert phase_of("model/SGD_like/conv") == "forward"


def test_layer_of_finds_the_keras_layer_of_forward_and_gradient_ops():
    from bench.profile import layer_of

    grad = "gradient_tape/resnet/stage3_block1_conv2/Conv2D/Conv2DBackpropFilter"
    assert layer_of(grad) == "stage3_block1_conv2"
    assert layer_of("resnet/stage3_block1_conv2/Conv2D") == "stage3_block1_conv2"
    assert layer_of("SGD/mul_12") == "SGD"


@pytest.mark.slow
def test_profile_cli_reports_forward_and_backward_ops_for_both_models():
    result = run_benchmark(
        "profile",
        "--model=mobilenet_v1_025",
        "--image_size=32",
        "--batch_size=2",
        "--num_classes=5",
        "--profile_steps=1",
        "--profile_rounds=1",
        "--warmup=1",
        "--compare_keras",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json_lines(result.stdout)
    assert row["model"] == "mobilenet_v1_025"
    assert set(row["ms_per_step"]) == {"ours", "keras"}
    for who, ops in row["ms_per_step"].items():
        assert all(ms >= 0 for ms in ops.values()), who
        # A depthwise model's step must show the depthwise conv forward and its filter gradient.
        assert any(k.startswith("forward/") and "DepthwiseConv2d" in k for k in ops), (who, ops)
        assert any(
            k.startswith("backward/") and "DepthwiseConv2dNativeBackpropFilter" in k for k in ops
        ), (who, json.dumps(ops)[:2000])
        assert any(k.startswith("optimizer/") for k in ops), who


def test_profile_rejects_zero_steps():
    result = run_benchmark("profile", "--model=mobilenet_v1_025", "--profile_steps=0")
    assert result.returncode != 0
    assert "--profile_steps must be >= 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_profile_takes_only_its_own_flags():
    """``--repeats`` is throughput's: profile used to accept it and ignore it silently."""
    result = run_benchmark("profile", "--model=mobilenet_v1_025", "--repeats=3")
    assert result.returncode != 0
    assert "Unknown command line flag 'repeats'" in result.stderr
