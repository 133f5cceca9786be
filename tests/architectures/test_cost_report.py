"""The cost report against hand counts, and the papers' claims against their formulas."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from architectures import create_model
from architectures.cost import fidelity, format_comparison, format_report, model_cost

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_net():
    """conv 3x3/2 (3->8) at 16x16, BN, ReLU, depthwise 3x3 (8), conv 1x1 (8->12), pool, dense 5."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="c3")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(12, 1, name="c1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(5, name="fc")(x)
    return keras.Model(inputs, outputs, name="small_net")


def _hand_count():
    macs = 8 * 8 * 3 * 3 * 3 * 8 + 8 * 8 * 9 * 8 + 8 * 8 * 8 * 12 + 12 * 5
    params = 3 * 3 * 3 * 8 + 2 * 8 + (9 * 8 + 8) + (8 * 12 + 12) + (12 * 5 + 5)
    return macs, params


def test_rows_sum_to_totals_which_match_hand_counts(small_net):
    report = model_cost(small_net)
    assert (report.total_macs, report.total_params) == _hand_count()
    assert report.total_macs == sum(r.macs for r in report.rows)
    assert report.total_params == sum(r.params for r in report.rows)
    assert sum(r.share for r in report.rows) == pytest.approx(1.0)
    assert [r.layer for r in report.rows] == ["c3", "bn", "relu", "dw", "c1", "pool", "fc"]
    assert report.rows[0].output_shape == (8, 8, 8)
    assert report.macs_by_category()["depthwise"] == 8 * 8 * 9 * 8


def test_trainable_params_equal_count_params_minus_bn_statistics():
    model = create_model("mobilenet_v2_035", input_shape=(32, 32, 3), num_classes=10)
    bn_stats = sum(
        2 * layer.moving_mean.shape[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert model_cost(model).total_params == model.count_params() - bn_stats


def test_nested_models_shared_layers_and_pruning_wrappers(small_net):
    macs, params = _hand_count()
    inputs = keras.Input((16, 16, 3))
    shared = keras.layers.Dense(4, name="head")
    a, b = shared(small_net(inputs)), shared(keras.layers.Dense(5, name="side")(small_net(inputs)))
    outer = keras.Model(inputs, keras.layers.Add(name="sum")([a, b]), name="outer")
    report = model_cost(outer)
    # small_net's layers once (its own graph), the shared head twice, its weights once
    assert report.total_macs == macs + 5 * 5 + 2 * 5 * 4
    assert report.total_params == params + (5 * 5 + 5) + (5 * 4 + 4)
    assert [r.layer for r in report.rows if r.layer.startswith("head")] == ["head", "head#1"]
    assert report.rows[0].layer == "small_net/c3"

    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        keras.models.clone_model(small_net),
        pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0),
    )
    pruned_report = model_cost(pruned)
    assert (pruned_report.total_macs, pruned_report.total_params) == (macs, params)
    assert "PruneLowMagnitude(Conv2D)" in {r.type for r in pruned_report.rows}

    # tfmot's quantization wrapper holds the inner kernel itself (the inner layer lists none).
    quantized = tfmot.quantization.keras.quantize_model(keras.models.clone_model(small_net))
    quantized_report = model_cost(quantized)
    assert (quantized_report.total_macs, quantized_report.total_params) == (macs, params)
    assert "QuantizeWrapperV2(Conv2D)" in {r.type for r in quantized_report.rows}


def test_subclassed_model_is_refused():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="functional or Sequential"):
        model_cost(model)


def test_formatters_show_every_row_and_the_totals(small_net):
    report = model_cost(small_net)
    text = format_report(report)
    for row in report.rows:
        assert row.layer in text
    assert f"{report.total_macs:,}" in text.splitlines()[-1]
    assert "relu" not in format_report(report, skip_free=True).split("\n", 1)[1]
    table = format_comparison([report, report])
    assert table.count("small_net") == 2 and "1.000" in table


def test_separable_claim_is_one_over_n_plus_one_over_k_squared():
    claim = fidelity.separable_claim(size=28, in_channels=192, out_channels=256)
    assert claim.measured == pytest.approx(1 / 256 + 1 / 9, rel=1e-12)
    assert round(claim.measured, 3) == 0.115 and claim.holds


def test_grouped_conv_divides_by_groups():
    claims = fidelity.grouped_claims(groups=(2, 3, 8), channels=48, size=7)
    assert [c.measured for c in claims] == pytest.approx([1 / 2, 1 / 3, 1 / 8], rel=1e-12)


def test_bottleneck_pair_costs_a_third_of_one_wide_pointwise():
    assert fidelity.bottleneck_claim(channels=24, expansion=6).measured == pytest.approx(1 / 3)
    assert fidelity.bottleneck_claim(channels=16, expansion=4).measured == pytest.approx(1 / 2)


@pytest.mark.parametrize("alpha_tag", ["100", "025"])
def test_fd_mobilenet_is_cheaper_than_mobilenet_at_equal_width(alpha_tag):
    fd, v1 = (
        model_cost(create_model(f"{family}_{alpha_tag}", input_shape=(64, 64, 3))).total_macs
        for family in ("fd_mobilenet", "mobilenet_v1")
    )
    assert fd < 0.35 * v1


def _run_cli(*args):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "benchmark.py", "cost", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_cli_model_compare_and_claims_in_json():
    result = _run_cli(
        "--model=mobilenet_v1_025",
        "--image_size=32",
        "--num_classes=10",
        "--compare=mobilenet_v1_025,fd_mobilenet_025",
        "--claims",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    reference = model_cost(
        create_model("mobilenet_v1_025", input_shape=(32, 32, 3), num_classes=10)
    )
    assert out["model"]["total_macs"] == reference.total_macs
    assert out["model"]["total_params"] == reference.total_params
    assert len(out["model"]["rows"]) == len(reference.rows)
    assert [c["model"] for c in out["compare"]] == ["mobilenet_v1_025", "fd_mobilenet_025"]
    assert out["compare"][1]["total_macs"] < out["compare"][0]["total_macs"]
    assert out["claims"] and all(c["holds"] for c in out["claims"])


def test_cli_unknown_model_fails_with_close_matches():
    result = _run_cli("--model=mobilenet_v2_10")
    assert result.returncode != 0
    assert "mobilenet_v2_100" in result.stderr
