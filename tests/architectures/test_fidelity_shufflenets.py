"""ShuffleNet v1 and v2 at 224×224, 1000 classes, against the published multiply-adds.

ShuffleNet v1's Table 1 numbers exclude the final FC (``docs/papers.md``), and so do Table
2/5's for the other scales (with FC, 2× would be 524.05M, also within 0.5 %); ShuffleNet v2's
published numbers include it (without, 1× would be 0.8 % low). Two variants cannot reach 0.5 % of
their printed value with the architecture papers.md defines; their measured gaps are pinned in
``KNOWN_MAC_GAPS`` so they cannot drift silently.
"""

import numpy as np
import pytest
import tf_keras as keras

from architectures import create_model, get_model_spec, list_models, shufflenet_v1, shufflenet_v2
from architectures.common import CLASSIFIER_NAME
from architectures.cost import model_cost
from layers import ChannelShuffle, ChannelSplit, GroupConv2D

pytestmark = pytest.mark.slow

V1 = [
    *(f"shufflenet_v1_g{g}_100" for g in (1, 2, 3, 4, 8)),
    *(f"shufflenet_v1_g3_{s}" for s in ("050", "150", "200")),
    "shufflenet_v1_g8_050",
]
V2 = [f"shufflenet_v2_{w}" for w in ("050", "100", "150", "200")]
# Relative tolerance where 0.5 % is out of reach: 0.5× g=3 counts 37.1M (37.6M with the FC) for
# the printed 38M; ShuffleNet v2 0.5× counts 40.5M for the printed 41M.
KNOWN_MAC_GAPS = {"shufflenet_v1_g3_050": 0.025, "shufflenet_v2_050": 0.015}


def _groups(name: str) -> int:
    return int(name.split("_g")[1].split("_")[0])


def _trainable(model) -> int:
    return sum(int(w.shape.num_elements()) for w in model.trainable_weights)


def test_exactly_the_issue_variants_are_registered():
    assert sorted(V1) == list_models("shufflenet_v1_*")
    assert list_models("shufflenet_v2_*") == V2
    for name in V1 + V2:
        spec = get_model_spec(name)
        assert spec.input_size == 224 and spec.num_classes == 1000
        assert spec.recipe == f"{name[:13]}_imagenet"
        assert spec.preprocessing.mean == (0.485, 0.456, 0.406)


@pytest.mark.parametrize("name", V1 + V2)
def test_published_macs(name):
    spec = get_model_spec(name)
    model = create_model(name)
    report = model_cost(model)
    assert report.total_params == _trainable(model)
    macs = report.total_macs
    if spec.paper_macs_exclude_classifier:
        macs -= sum(row.macs for row in report.rows if row.layer == CLASSIFIER_NAME)
    if spec.paper_macs is None:
        assert name == "shufflenet_v1_g8_050"  # the only variant without a number in papers.md
    else:
        gap = abs(macs / spec.paper_macs - 1)
        assert gap <= KNOWN_MAC_GAPS.get(name, 5e-3), (name, macs)
        if name in KNOWN_MAC_GAPS:
            assert gap > 5e-3, f"{name} now meets 0.5 %: drop it from KNOWN_MAC_GAPS"
    keras.backend.clear_session()


@pytest.mark.parametrize("name", ["shufflenet_v1_g3_100", "shufflenet_v1_g8_050"])
def test_v1_structure_follows_the_paper(name):
    groups = _groups(name)
    model = create_model(name)
    first = model.get_layer("stage2_unit1_gconv1")
    assert type(first) is keras.layers.Conv2D  # the one ungrouped first 1x1 (24 or 12 inputs)
    grouped = [layer for layer in model.layers if isinstance(layer, GroupConv2D)]
    assert len(grouped) == 2 * 16 - 1 and all(layer.groups == groups for layer in grouped)
    shuffles = [layer for layer in model.layers if isinstance(layer, ChannelShuffle)]
    assert len(shuffles) == 16 and all(layer.groups == groups for layer in shuffles)
    stem, widths = shufflenet_v1.stage_widths(groups, 0.5 if name.endswith("050") else 1.0)
    assert model.get_layer("conv1").filters == stem
    for stage, units, width in zip((2, 3, 4), (4, 8, 4), widths, strict=True):
        assert model.get_layer(f"stage{stage}_unit{units}_relu").output.shape[-1] == width
        assert model.get_layer(f"stage{stage}_unit1_gconv1").filters == width // 4
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(layer.use_bias for layer in convs + grouped)
    keras.backend.clear_session()


def test_v1_widths_divisible_by_groups_at_every_scale():
    for groups in (1, 2, 3, 4, 8):
        for scale in (0.25, 0.5, 1.0, 1.5, 2.0):
            stem, widths = shufflenet_v1.stage_widths(groups, scale)
            assert stem % groups == 0 and abs(stem - 24 * scale) <= groups / 2
            for width, paper in zip(widths, shufflenet_v1.STAGE_CHANNELS[groups], strict=True):
                assert (width // 4) % groups == 0 and (width - stem) % groups == 0
                assert abs(width - paper * scale) <= 2 * groups
    assert shufflenet_v1.stage_widths(8, 0.5)[0] == 16  # 12 is not a multiple of 8


def _run_unit(unit_fn, shape, zero_branch_bn: str):
    """Builds one unit on ``shape``, zeroes the branch's last BN (gamma, beta): the output is then
    the shortcut path alone."""
    inputs = keras.Input(shape)
    model = keras.Model(inputs, unit_fn(inputs))
    bn = model.get_layer(zero_branch_bn)
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([0 * gamma, 0 * beta, mean, var])
    x = np.abs(np.random.default_rng(0).normal(size=(2, *shape))).astype("float32")
    return x, model(x, training=False).numpy()


def test_v1_units_join_branch_and_shortcut_as_the_paper_says():
    unit = shufflenet_v1.shuffle_unit
    x, y = _run_unit(
        lambda t: unit(t, 24, groups=3, strides=1, group_first=True, name="u"),
        (6, 6, 24),
        "u_gconv2_bn",
    )
    np.testing.assert_allclose(y, np.maximum(x, 0), atol=1e-6)  # add, then ReLU
    x, y = _run_unit(
        lambda t: unit(t, 48, groups=3, strides=2, group_first=False, name="u"),
        (6, 6, 12),
        "u_gconv2_bn",
    )
    pooled = keras.layers.AveragePooling2D(3, 2, padding="same")(x).numpy()
    np.testing.assert_allclose(y[..., :12], pooled, atol=1e-6)  # shortcut first in the concat
    np.testing.assert_array_equal(y[..., 12:], 0)


def test_v2_stride1_unit_passes_the_first_half_and_shuffles_with_two_groups():
    x, y = _run_unit(
        lambda t: shufflenet_v2.shuffle_v2_unit(t, 8, strides=1, name="u"),
        (4, 4, 8),
        "u_main_conv2_bn",
    )
    # Zeroed branch -> concat(first half, 0) -> shuffle(2): passed channel i lands at 2i.
    np.testing.assert_allclose(y[..., 0::2], x[..., :4], atol=1e-6)
    np.testing.assert_array_equal(y[..., 1::2], 0)


def test_v2_structure():
    model = create_model("shufflenet_v2_100")
    assert sum(isinstance(layer, ChannelSplit) for layer in model.layers) == 3 + 7 + 3
    assert all(layer.groups == 2 for layer in model.layers if isinstance(layer, ChannelShuffle))
    assert model.get_layer("stage2_unit1_concat").output.shape[-1] == 116
    assert model.get_layer("conv5").filters == 1024
    keras.backend.clear_session()


def test_bad_family_arguments_name_the_value():
    with pytest.raises(ValueError, match="groups must be one of .* got 5"):
        shufflenet_v1.shufflenet_v1(groups=5)
    with pytest.raises(ValueError, match="scale must be a positive number, got 0"):
        shufflenet_v1.shufflenet_v1(scale=0)
    with pytest.raises(ValueError, match="stem_channels=20 must be a multiple of groups=3"):
        shufflenet_v1.shufflenet_v1(groups=3, stem_channels=20)
    with pytest.raises(ValueError, match="width must be one of .* got 0.75"):
        shufflenet_v2.shufflenet_v2(width=0.75)
