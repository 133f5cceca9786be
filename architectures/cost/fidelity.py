"""The papers' cost claims, recomputed from layer costs, and each variant against its paper.

``seed_claims()`` turns the statements the efficient-CNN papers make ("a separable conv costs
1/N + 1/K² of a standard one", "a grouped conv divides the cost by G", ...) into numbers measured
with ``layers.cost.layer_cost`` on real layers. ``variant_fidelity()`` builds every registered
variant at its paper size and sets its parameters and multiply-adds beside the published ones.
"""

from __future__ import annotations

import dataclasses
import math

import tf_keras as keras

from architectures.common import CLASSIFIER_NAME
from architectures.cost.report import model_cost
from architectures.registry import create_model, get_model_spec, list_models
from layers.cost import layer_cost


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim, what the layer costs give, what the formula (or paper) says, and whether it holds.

    ``expected`` is None where the claim is an inequality (``formula`` says which).
    """

    name: str
    formula: str
    measured: float
    expected: float | None
    holds: bool


def _macs(layer: keras.layers.Layer, input_shape) -> int:
    if not layer.built and not hasattr(layer, "compute_cost"):
        layer.build(input_shape)
    return layer_cost(layer, input_shape).macs


def separable_claim(size: int = 28, in_channels: int = 192, out_channels: int = 256) -> Claim:
    """Depthwise-separable vs standard 3×3 conv (MobileNet v1): MACs ratio ``1/N + 1/K²``."""
    from layers import DepthwiseSeparableConv2D

    shape = (None, size, size, in_channels)
    standard = keras.layers.Conv2D(out_channels, 3, padding="same", use_bias=False)
    separable = DepthwiseSeparableConv2D(out_channels, 3, padding="same", use_bias=False)
    measured = _macs(separable, shape) / _macs(standard, shape)
    expected = 1 / out_channels + 1 / 9
    return Claim(
        name=f"separable / standard 3x3 at {size}x{size}x{in_channels} -> {out_channels}",
        formula="1/N + 1/K^2",
        measured=measured,
        expected=expected,
        holds=math.isclose(measured, expected, rel_tol=1e-9),
    )


def grouped_claims(groups=(2, 3, 4, 8), size: int = 28, channels: int = 240) -> list[Claim]:
    """Grouped vs standard 3×3 conv (ShuffleNet, ResNeXt): MACs ratio ``1/G``."""
    from layers import GroupConv2D

    shape = (None, size, size, channels)
    standard = _macs(keras.layers.Conv2D(channels, 3, padding="same", use_bias=False), shape)
    claims = []
    for g in groups:
        measured = _macs(GroupConv2D(channels, 3, groups=g, use_bias=False), shape) / standard
        claims.append(
            Claim(
                name=f"grouped (G={g}) / standard 3x3 at {size}x{size}x{channels}",
                formula="1/G",
                measured=measured,
                expected=1 / g,
                holds=math.isclose(measured, 1 / g, rel_tol=1e-9),
            )
        )
    return claims


def bottleneck_claim(size: int = 14, channels: int = 64, expansion: int = 6) -> Claim:
    """MobileNet v2: expand (C -> tC) + project (tC -> C) 1×1s vs one wide tC -> tC 1×1: ``2/t``."""
    wide = expansion * channels
    narrow_shape, wide_shape = (None, size, size, channels), (None, size, size, wide)
    pair = _macs(keras.layers.Conv2D(wide, 1, use_bias=False), narrow_shape)
    pair += _macs(keras.layers.Conv2D(channels, 1, use_bias=False), wide_shape)
    measured = pair / _macs(keras.layers.Conv2D(wide, 1, use_bias=False), wide_shape)
    return Claim(
        name=f"MobileNet v2 expand+project 1x1 (t={expansion}) / one {wide}->{wide} 1x1",
        formula="2/t",
        measured=measured,
        expected=2 / expansion,
        holds=math.isclose(measured, 2 / expansion, rel_tol=1e-9),
    )


def fast_downsampling_claims(widths=("100", "075", "050", "025")) -> list[Claim]:
    """FD-MobileNet vs MobileNet v1 at equal width and 224×224: cheaper (ratio < 1)."""
    claims = []
    for width in widths:
        fd_name, v1_name = f"fd_mobilenet_{width}", f"mobilenet_v1_{width}"
        fd, v1 = (model_cost(create_model(n)).total_macs for n in (fd_name, v1_name))
        keras.backend.clear_session()
        fd_paper, v1_paper = get_model_spec(fd_name).paper_macs, get_model_spec(v1_name).paper_macs
        claims.append(
            Claim(
                name=f"{fd_name} / {v1_name} MACs at 224",
                formula="< 1 (expected: the papers' ratio)",
                measured=fd / v1,
                expected=fd_paper / v1_paper if fd_paper and v1_paper else None,
                holds=fd < v1,
            )
        )
    return claims


def seed_claims() -> list[Claim]:
    """Every claim above, in the order the seeds state them."""
    return [
        separable_claim(),
        *grouped_claims(),
        bottleneck_claim(),
        *fast_downsampling_claims(),
    ]


@dataclasses.dataclass(frozen=True)
class VariantFidelity:
    """One variant's cost at its paper size and 1000 classes, next to the published numbers.

    ``macs`` is counted as the paper counts it: without the classifier where the registry says
    ``paper_macs_exclude_classifier`` (ShuffleNet v1).
    """

    name: str
    input_size: int
    min_input_size: int
    params: int
    macs: int
    paper_params: int | None
    paper_macs: float | None
    macs_exclude_classifier: bool = False

    @staticmethod
    def _diff(measured: float, published: float | None) -> float | None:
        return None if not published else 100.0 * (measured / published - 1.0)

    @property
    def macs_diff_percent(self) -> float | None:
        return self._diff(self.macs, self.paper_macs)

    @property
    def params_diff_percent(self) -> float | None:
        return self._diff(self.params, self.paper_params)


def variant_fidelity(pattern: str = "*") -> list[VariantFidelity]:
    """Builds each registered variant matching ``pattern`` at its paper size and measures it."""
    rows = []
    for name in list_models(pattern):
        spec = get_model_spec(name)
        # Classifiers at ImageNet's 1000 classes, segmenters at their own (PASCAL VOC's 21).
        classes = 1000 if spec.task == "classification" else spec.num_classes
        report = model_cost(create_model(name, num_classes=classes))
        keras.backend.clear_session()
        macs = report.total_macs
        if spec.paper_macs_exclude_classifier:
            macs -= sum(row.macs for row in report.rows if row.layer == CLASSIFIER_NAME)
        rows.append(
            VariantFidelity(
                name=name,
                input_size=spec.input_size,
                min_input_size=spec.min_input_size,
                params=report.total_params,
                macs=macs,
                paper_params=spec.paper_params,
                paper_macs=spec.paper_macs,
                macs_exclude_classifier=spec.paper_macs_exclude_classifier,
            )
        )
    return rows
