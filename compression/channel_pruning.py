"""Structured channel pruning: a thinner dense model with the surviving weights.

    import compression
    thin = compression.prune_channels(model, target_macs=0.5, importance="l1", round_to=8)

Three steps, each usable alone:

1. **Importance** (``unit_scores``): one score per unit of ``channel_graph`` (the channels that
   go together). ``l1``: the L1 norm of the filters that write the unit (Li et al., 2017);
   ``bn_gamma``: ``|γ|`` of the batch norms that scale it (Liu et al., 2017; units without a
   batch norm fall back to ``l1``); ``taylor``: the first-order estimate of the loss change when
   the unit is removed, ``|Σ w·∂L/∂w|`` over its filters and batch-norm parameters, summed over
   a few training batches (Molchanov et al., 2019). Each member layer's scores are divided by
   their mean, so a unit's score (the sum over its members) compares across layers.
2. **Budget** (``plan``): units are removed greedily, a rounding step at a time, from the group
   whose next step loses the least importance per multiply-add (or parameter) saved, until the
   model costs ``target_macs`` (``target_params``) of the dense one. Counts stay multiples of
   ``round_to`` channels (what SIMD kernels like) and at least ``min_channels``. The cost of every
   candidate comes from ``layers.layer_cost``: each layer is probed at its full and one-step
   thinner widths, and its cost (multilinear in its input, inner and output widths for every
   layer kind the graph knows) is interpolated from those probes.
3. **Surgery** (``apply_plan``): ``keras.models.clone_model`` rebuilds the functional graph with
   the same layer types, the producers' ``filters``/``units`` set to the surviving counts, and
   the surviving weight slices copied (kernels on their input and output axes, per-group slices
   of grouped kernels, depthwise kernels, biases, batch-norm γ, β and moving statistics). The
   result is a plain model: no masks, no wrappers.

``prune_channels(..., steps=N, fine_tune=f)`` repeats the three N times along a geometric
schedule of budgets, with ``f`` training each intermediate model, so later steps score channels
on fine-tuned weights (gradual pruning, as in Molchanov et al., 2019).
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import itertools
import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from architectures.cost import model_cost  # noqa: E402
from compression.channel_graph import (  # noqa: E402
    BATCH_NORM,
    CONV,
    DENSE,
    DEPTHWISE,
    PRODUCERS,
    SEPARABLE,
    SPATIAL,
    ChannelGraph,
    ChannelGroup,
    LayerChannels,
)
from layers.cost import LayerCost, layer_cost  # noqa: E402

IMPORTANCES = ("l1", "bn_gamma", "taylor")

# Which axis of each weight runs over which channel set, per layer kind. "in_local" is the input
# channel within one group (a grouped kernel holds C_in / groups input channels).
_SLICES = {
    CONV: {"kernel": ((2, "in_local"), (3, "out")), "bias": ((0, "out"),)},
    DENSE: {"kernel": ((0, "in"), (1, "out")), "bias": ((0, "out"),)},
    DEPTHWISE: {"depthwise_kernel": ((2, "in"),), "bias": ((0, "out"),)},
    SEPARABLE: {
        "depthwise_kernel": ((2, "in"),),
        "pointwise_kernel": ((2, "inner"), (3, "out")),
        "bias": ((0, "out"),),
    },
    SPATIAL: {
        "vertical_kernel": ((2, "in"), (3, "inner")),
        "horizontal_kernel": ((2, "inner"), (3, "out")),
        "bias": ((0, "out"),),
        "intermediate_bias": ((0, "inner"),),
    },
    BATCH_NORM: {
        name: ((0, "in"),) for name in ("gamma", "beta", "moving_mean", "moving_variance")
    },
}
# The weights whose output-channel slices "write" a unit (for l1 and taylor), per producer kind.
_WRITERS = {
    CONV: ("kernel", "bias"),
    DENSE: ("kernel", "bias"),
    SEPARABLE: ("pointwise_kernel", "bias"),
    SPATIAL: ("horizontal_kernel", "bias"),
}
# The variables a layer's cost depends on (channel counts), per kind.
_COST_VARIABLES = {
    CONV: ("in", "out"),
    DENSE: ("in", "out"),
    SEPARABLE: ("in", "out"),
    SPATIAL: ("in", "inner", "out"),
    DEPTHWISE: ("in",),
    BATCH_NORM: ("in",),
}


def weight_name(weight) -> str:
    """A weight's own name: ``kernel`` for ``block_1/conv/kernel:0``."""
    return weight.name.split("/")[-1].split(":")[0]


def _ids(info: LayerChannels, role: str) -> np.ndarray:
    """The unit ids of a layer's channel set: ``in``, ``out`` or ``inner``."""
    if role == "in":
        return info.inputs[0]
    if role == "out":
        return info.outputs[0]
    if info.kind == SEPARABLE:  # the depthwise half's outputs: input channel c, dm times
        return np.repeat(info.inputs[0], info.layer.depth_multiplier)
    return info.inner


# ---------------------------------------------------------------------------------------------
# Surgery


def _kept(info: LayerChannels, graph: ChannelGraph, removed: set[int]) -> dict[str, np.ndarray]:
    """Surviving channel indices of each channel set of a layer (the roles of ``_SLICES``)."""
    roles = ("in",) if info.kind == BATCH_NORM else ("in", "out")
    if info.kind in (SEPARABLE, SPATIAL):
        roles += ("inner",)
    kept = {role: graph.kept_positions(_ids(info, role), removed) for role in roles}
    if info.kind == CONV:  # per group: each group of a grouped kernel reads its own slice
        per_group = len(info.inputs[0]) // info.groups
        kept["in_local"] = [
            kept["in"][(kept["in"] >= g * per_group) & (kept["in"] < (g + 1) * per_group)]
            - g * per_group
            for g in range(info.groups)
        ]
    return kept


def _thin_config(info: LayerChannels, kept: dict[str, np.ndarray]) -> dict:
    config = info.layer.get_config()
    if info.kind in (CONV, SEPARABLE, SPATIAL):
        config["filters"] = len(kept["out"])
    if info.kind == SPATIAL:
        config["intermediate_filters"] = len(kept["inner"])
    if info.kind == DENSE:
        config["units"] = len(kept["out"])
    return config


def _slice(value: np.ndarray, axes, kept: dict) -> np.ndarray:
    if axes == _SLICES[CONV]["kernel"]:
        return _slice_grouped_kernel(value, kept["in_local"], kept["out"])
    for axis, role in axes:
        value = np.take(value, kept[role], axis=axis)
    return value


def _slice_grouped_kernel(value: np.ndarray, in_local: list, out: np.ndarray) -> np.ndarray:
    """A ``(k_h, k_w, C_in / G, C_out)`` kernel thinned group by group: output block ``g``
    keeps the input channels that survive in group ``g`` (the same positions in every group
    unless a shuffle laid the units out unevenly)."""
    per_group = value.shape[3] // len(in_local)
    blocks = [
        value[:, :, local][..., out[(out >= g * per_group) & (out < (g + 1) * per_group)]]
        for g, local in enumerate(in_local)
    ]
    return np.concatenate(blocks, axis=3)


def apply_plan(graph: ChannelGraph, removed: set[int]) -> keras.Model:
    """The model of ``graph`` with the units ``removed`` taken out, weights copied.

    Args:
      graph: the ``ChannelGraph`` of the dense model.
      removed: unit ids to remove (from ``ChannelGroup.units``; never a fixed unit).

    Returns:
      A new functional model of the same layer types and names, thinner where units were
      removed; the dense model is left unchanged.
    """
    kept = {
        name: _kept(info, graph, removed)
        for name, info in graph.layers.items()
        if info.kind in _SLICES
    }

    def clone(layer):
        info = graph.layers.get(layer.name)
        if info is not None and layer.name in kept:
            return type(layer).from_config(_thin_config(info, kept[layer.name]))
        return type(layer).from_config(layer.get_config())

    thin = keras.models.clone_model(graph.model, clone_function=clone)
    for layer in graph.model.layers:
        if isinstance(layer, keras.layers.InputLayer) or not layer.weights:
            continue
        values = [w.numpy() for w in layer.weights]
        if layer.name in kept:
            slices = _SLICES[graph.layers[layer.name].kind]
            values = [
                _slice(v, slices[weight_name(w)], kept[layer.name])
                for w, v in zip(layer.weights, values, strict=True)
            ]
        thin.get_layer(layer.name).set_weights(values)
    return thin


# ---------------------------------------------------------------------------------------------
# Importance


def _weight(layer, name: str):
    for w in layer.weights:
        if weight_name(w) == name:
            return w
    return None


def _per_channel(value: np.ndarray, axis: int) -> np.ndarray:
    """Sums over every axis but ``axis``."""
    return np.moveaxis(value, axis, -1).reshape(-1, value.shape[axis]).sum(axis=0)


def _member_scores(graph: ChannelGraph, per_layer) -> dict[int, float]:
    """Unit -> sum over member layers of that layer's mean-normalised channel scores.

    ``per_layer(info)`` yields ``(unit ids, per-channel scores)`` pairs for a layer.
    """
    totals: dict[int, float] = {}
    for info in graph.layers.values():
        for ids, scores in per_layer(info):
            mean = float(np.mean(scores)) if len(scores) else 0.0
            normalised = scores / mean if mean > 0 else np.zeros_like(scores)
            for unit, score in zip(ids.tolist(), normalised.tolist(), strict=True):
                totals[unit] = totals.get(unit, 0.0) + score
    return totals


def _writer_slices(info: LayerChannels):
    """``(unit ids, weight, output axis)`` of each weight that writes a producer's channels."""
    if info.kind not in PRODUCERS:
        return
    for name in _WRITERS[info.kind]:
        w = _weight(info.layer, name)
        if w is not None:
            yield info.outputs[0], w, len(w.shape) - 1
    if info.kind == SPATIAL:
        yield info.inner, _weight(info.layer, "vertical_kernel"), 3


def _l1(graph: ChannelGraph) -> dict[int, float]:
    def per_layer(info):
        for ids, w, axis in _writer_slices(info):
            if w.shape.rank > 1:  # kernels only: a bias says nothing about a filter's size
                yield ids, _per_channel(np.abs(w.numpy()), axis)

    return _member_scores(graph, per_layer)


def _bn_gamma(graph: ChannelGraph) -> dict[int, float]:
    def per_layer(info):
        gamma = _weight(info.layer, "gamma") if info.kind == BATCH_NORM else None
        if gamma is not None:
            yield info.inputs[0], np.abs(gamma.numpy())

    return {**_l1(graph), **_member_scores(graph, per_layer)}


def _taylor(graph: ChannelGraph, batches, loss) -> dict[int, float]:
    model = graph.model
    owners = []  # (unit ids, weight, channel axis)
    for info in graph.layers.values():
        owners.extend(_writer_slices(info))
        if info.kind == BATCH_NORM:
            for name in ("gamma", "beta"):
                w = _weight(info.layer, name)
                if w is not None:
                    owners.append((info.inputs[0], w, 0))
    variables = [w for _, w, _ in owners]
    sums = [np.zeros(w.shape[axis]) for _, w, axis in owners]
    seen = 0
    for images, labels in batches:
        with tf.GradientTape() as tape:
            outputs = model(images, training=False)
            value = loss(labels, outputs)
        grads = tape.gradient(value, variables)
        for i, ((_, w, axis), grad) in enumerate(zip(owners, grads, strict=True)):
            if grad is not None:
                sums[i] += np.abs(_per_channel((w * grad).numpy(), axis))
        seen += 1
    if not seen:
        raise ValueError("importance='taylor' needs training batches; got an empty dataset.")
    by_weight = {}
    for (ids, w, _), total in zip(owners, sums, strict=True):
        by_weight.setdefault(id(w), (ids, 0.0))
        by_weight[id(w)] = (ids, by_weight[id(w)][1] + total)

    def per_layer(info):
        for ids, w, _ in _writer_slices(info):
            yield ids, by_weight[id(w)][1]
        if info.kind == BATCH_NORM:
            for name in ("gamma", "beta"):
                w = _weight(info.layer, name)
                if w is not None:
                    yield info.inputs[0], by_weight[id(w)][1]

    return _member_scores(graph, per_layer)


def _default_loss(labels, outputs):
    """Cross-entropy for one-hot or integer labels; logits unless the outputs are a softmax."""
    fn = (
        keras.losses.categorical_crossentropy
        if np.ndim(labels) == len(outputs.shape)
        else keras.losses.sparse_categorical_crossentropy
    )
    from_logits = not np.allclose(tf.reduce_sum(outputs, axis=-1).numpy(), 1.0, atol=1e-3)
    return tf.reduce_mean(fn(labels, outputs, from_logits=from_logits))


def unit_scores(
    graph: ChannelGraph, importance: str = "l1", batches=None, loss=None
) -> dict[int, float]:
    """Importance of every unit of ``graph`` (higher: more important); see the module docstring.

    Args:
      graph: the dense model's ``ChannelGraph``.
      importance: ``"l1"``, ``"bn_gamma"`` or ``"taylor"``.
      batches: ``taylor`` only: an iterable of ``(images, labels)`` training batches.
      loss: ``taylor`` only: ``loss(labels, outputs) -> scalar``; default cross-entropy.
    """
    if importance not in IMPORTANCES:
        raise ValueError(f"importance={importance!r} is not one of {IMPORTANCES}.")
    if importance == "l1":
        return _l1(graph)
    if importance == "bn_gamma":
        return _bn_gamma(graph)
    if batches is None:
        raise ValueError(
            "importance='taylor' needs training batches: pass batches=<(images, labels) "
            "iterable>, or use importance='l1'."
        )
    return _taylor(graph, batches, loss or _default_loss)


# ---------------------------------------------------------------------------------------------
# Cost and budget


@dataclasses.dataclass
class _Call:
    """One call of a layer whose cost depends on channel counts, as a multilinear function."""

    layer: str
    arrays: dict[str, np.ndarray]  # variable -> unit ids
    full: dict[str, int]
    low: dict[str, int]
    corners: dict[tuple, LayerCost]  # (True = full, False = low) per variable -> cost
    owns_params: bool

    def cost(self, counts: dict[str, int]) -> tuple[float, float]:
        names = list(self.full)
        macs = params = 0.0
        for corner, value in self.corners.items():
            weight = 1.0
            for name, at_full in zip(names, corner, strict=True):
                span = self.full[name] - self.low[name]
                x = counts[name]
                weight *= (x - self.low[name]) / span if at_full else (self.full[name] - x) / span
            macs += weight * value.macs
            params += weight * value.params
        return macs, (params if self.owns_params else 0.0)


def _probe(info: LayerChannels, input_shape, counts: dict[str, int], cache: dict) -> LayerCost:
    """``layer_cost`` of a fresh copy of the layer at the given channel counts (memoised: the
    repeated blocks of a network probe the same layer shapes)."""
    kept = {role: np.arange(n) for role, n in counts.items()}
    kept.setdefault("out", np.arange(counts.get("out", 0)))
    config = _thin_config(info, kept) if info.kind in PRODUCERS else info.layer.get_config()
    config.pop("name", None)
    shape = (*input_shape[:-1], counts["in"])
    key = (type(info.layer).__name__, repr(sorted(config.items())), shape)
    if key not in cache:
        with tf.Graph().as_default():  # graph-mode variables: no initializer runs (10x faster)
            probe = type(info.layer).from_config(config)
            probe.build(shape)
            cache[key] = layer_cost(probe, shape)
        # A layer made in a v1 graph rebases its class (and its parents) on tf_keras' v1 Layer,
        # for every existing instance too (version_utils.swap_class), and calling the eager
        # model then fails; making one eagerly (no variables yet) rebases them back.
        type(info.layer).from_config(config)
    return cache[key]


class CostModel:
    """Multiply-adds and parameters of the model for any set of removed units.

    Exact for every layer kind the graph knows: their cost is multilinear in their input, inner
    and output channel counts, so probing each layer at two widths per count pins it down.
    """

    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self.fixed = LayerCost()
        self.calls: list[_Call] = []
        self._probes: dict = {}
        for name, info in graph.layers.items():
            for index, shapes in enumerate(info.input_shapes):
                self._add(name, info, index, shapes)

    def _add(self, name, info, index, shapes):
        variables = _COST_VARIABLES.get(info.kind, ())
        arrays = {v: _ids(info, v) for v in variables}
        step = {v: info.groups if info.kind == CONV and v != "inner" else 1 for v in variables}
        free = {
            v: ids
            for v, ids in arrays.items()
            if len(ids) > step[v] and not set(ids.tolist()) <= self.graph.fixed
        }
        if not free:
            shape = shapes[0] if len(shapes) == 1 else list(shapes)
            cost = layer_cost(info.layer, shape)
            self.fixed += LayerCost(cost.macs, cost.params if index == 0 else 0)
            return
        full = {v: len(arrays[v]) for v in variables}
        low = {v: full[v] - step[v] if v in free else full[v] for v in full}
        names = [v for v in full if v in free]
        corners = {}
        for corner in itertools.product((True, False), repeat=len(names)):
            counts = dict(full)
            counts.update({v: full[v] if f else low[v] for v, f in zip(names, corner, strict=True)})
            corners[corner] = _probe(info, shapes[0], counts, self._probes)
        self.calls.append(
            _Call(
                name,
                {v: arrays[v] for v in names},
                {v: full[v] for v in names},
                {v: low[v] for v in names},
                corners,
                owns_params=index == 0,
            )
        )

    def total(self, removed: set[int]) -> tuple[float, float]:
        """``(macs, params)`` of the model with ``removed`` units taken out."""
        macs, params = float(self.fixed.macs), float(self.fixed.params)
        for call in self.calls:
            m, p = call.cost(self._counts(call, removed))
            macs, params = macs + m, params + p
        return macs, params

    @staticmethod
    def _counts(call: _Call, removed: set[int]) -> dict[str, int]:
        return {
            v: int(len(ids) - np.count_nonzero(np.isin(ids, list(removed))))
            if removed
            else len(ids)
            for v, ids in call.arrays.items()
        }


def _target(target_macs: float | None, target_params: float | None) -> tuple[float, int]:
    """``(fraction, 0 for MACs or 1 for parameters)``, checked."""
    if (target_macs is None) == (target_params is None):
        raise ValueError("Give exactly one of target_macs and target_params.")
    target = target_macs if target_macs is not None else target_params
    if not 0.0 < target <= 1.0:
        raise ValueError(f"The target fraction must be in (0, 1], got {target}.")
    return target, 0 if target_macs is not None else 1


@dataclasses.dataclass
class PruningPlan:
    """What ``plan`` decided.

    Attributes:
      removed: the unit ids to remove.
      kept: group name -> ``(kept channels, dense channels)`` in its first producer's output.
      dense: ``(macs, params)`` of the dense model.
      estimated: ``(macs, params)`` predicted for the pruned model.
    """

    removed: set[int]
    kept: dict[str, tuple[int, int]]
    dense: tuple[int, int]
    estimated: tuple[int, int]


def skipped_groups(graph: ChannelGraph, skip: tuple[str, ...]) -> set[str]:
    """The names of ``graph``'s groups that ``skip`` (names or ``fnmatch`` patterns) matches.

    Raises:
      ValueError: a name or pattern that matches no group (a typo would otherwise prune what
        it meant to keep).
    """
    names = [g.name for g in graph.groups]
    matched = set()
    for pattern in skip:
        hits = {name for name in names if fnmatch.fnmatchcase(name, pattern)}
        if not hits:
            raise ValueError(
                f"skip={pattern!r} matches no channel group; the groups are the first producer "
                f"layers {', '.join(names)} (compression.channel_groups(model))."
            )
        matched |= hits
    return matched


def plan(
    graph: ChannelGraph,
    scores: dict[int, float],
    *,
    target_macs: float | None = None,
    target_params: float | None = None,
    round_to: int = 8,
    min_channels: int | None = None,
    min_fraction: float = 0.0,
    skip: tuple[str, ...] = (),
    costs: CostModel | None = None,
) -> PruningPlan:
    """Chooses the units to remove so the model costs at most the target fraction.

    Args:
      graph: the dense model's ``ChannelGraph``.
      scores: unit -> importance (``unit_scores``).
      target_macs: fraction of the dense multiply-adds to keep, in (0, 1].
      target_params: fraction of the dense parameters to keep, in (0, 1] (when no
        ``target_macs``).
      round_to: channel counts stay multiples of this (in each group's first producer).
      min_channels: the fewest channels a group keeps; default ``round_to``.
      min_fraction: the smallest fraction of its channels a group keeps (0: no floor; 0.5: no
        group loses more than half, which stops the budget from collapsing a few groups).
      skip: groups never pruned: their names (first producer layer) or ``fnmatch`` patterns
        of them (``"*_project"``).
      costs: the graph's ``CostModel``, when the caller plans several budgets.

    Returns:
      A ``PruningPlan``. When the groups run out of channels to remove before the target is
      met, the plan stops there (``estimated`` says where).
    """
    target, index = _target(target_macs, target_params)
    costs = costs or CostModel(graph)
    dense = costs.total(set())
    budget = target * dense[index]
    min_channels = round_to if min_channels is None else min_channels

    kept_whole = skipped_groups(graph, skip)
    groups = [g for g in graph.groups if g.name not in kept_whole]
    order = {g.name: sorted(g.units, key=lambda u: scores.get(u, 0.0)) for g in groups}
    removed_count = {g.name: 0 for g in groups}
    counts = [dict(call.full) for call in costs.calls]  # kept channels per call and variable
    # group -> [(call index, variable, unit -> channels of that unit in the variable's set)]
    touches: dict[str, list[tuple[int, str, dict[int, int]]]] = {}
    for g in groups:
        units = set(g.units)
        touches[g.name] = []
        for i, call in enumerate(costs.calls):
            for variable, ids in call.arrays.items():
                members = [u for u in ids.tolist() if u in units]
                if members:
                    touches[g.name].append((i, variable, collections.Counter(members)))
    removed: set[int] = set()
    current = dense[index]

    def next_chunk(g: ChannelGroup) -> list[int]:
        step = max(1, round_to // g.channels_per_unit)
        floor = max(1, math.ceil(min_channels / g.channels_per_unit))
        floor = max(floor, math.ceil(min_fraction * len(g.units) - 1e-9))
        kept = len(g.units) - removed_count[g.name]
        target_kept = ((kept - 1) // step) * step
        if target_kept < floor:
            return []
        return order[g.name][len(g.units) - kept : len(g.units) - target_kept]

    def after(g: ChannelGroup, chunk: list[int]) -> dict[int, dict[str, int]]:
        """Kept counts of the calls ``g`` touches once ``chunk`` is removed."""
        new = {}
        for i, variable, per_unit in touches[g.name]:
            new.setdefault(i, dict(counts[i]))[variable] -= sum(per_unit[u] for u in chunk)
        return new

    cache: dict[str, tuple[float, list[int], float]] = {}

    def candidate(g: ChannelGroup):
        if g.name not in cache:
            chunk = next_chunk(g)
            saving = 0.0
            if chunk:
                for i, new in after(g, chunk).items():
                    call = costs.calls[i]
                    saving += call.cost(counts[i])[index] - call.cost(new)[index]
            loss = sum(scores.get(u, 0.0) for u in chunk)
            cache[g.name] = (loss / saving if saving > 0 else math.inf, chunk, saving)
        return cache[g.name]

    calls_of = {g.name: {i for i, _, _ in touches[g.name]} for g in groups}
    while current > budget:
        best = min(groups, key=lambda g: candidate(g)[0], default=None)
        if best is None or candidate(best)[0] == math.inf:
            break
        _, chunk, saving = candidate(best)
        current -= saving
        removed |= set(chunk)
        removed_count[best.name] += len(chunk)
        for i, new in after(best, chunk).items():
            counts[i] = new
        for g in groups:
            if calls_of[g.name] & calls_of[best.name]:
                cache.pop(g.name, None)
    estimated = costs.total(removed)

    kept = {}
    for g in graph.groups:
        units = len(g.units) - removed_count.get(g.name, 0)
        kept[g.name] = (units * g.channels_per_unit, g.channels)
    return PruningPlan(
        removed=removed,
        kept=kept,
        dense=(int(round(dense[0])), int(round(dense[1]))),
        estimated=(int(round(estimated[0])), int(round(estimated[1]))),
    )


def prune_channels(
    model: keras.Model,
    target_macs: float | None = 0.5,
    *,
    target_params: float | None = None,
    importance: str = "l1",
    round_to: int = 8,
    min_channels: int | None = None,
    min_fraction: float = 0.0,
    skip: tuple[str, ...] = (),
    batches=None,
    loss=None,
    steps: int = 1,
    fine_tune=None,
    return_plan: bool = False,
):
    """A thinner copy of ``model`` that costs ``target_macs`` (or ``target_params``) of it.

    Args:
      model: a built functional or Sequential tf_keras model (plain layers, no tfmot wrappers).
      target_macs: fraction of the multiply-adds to keep; None when ``target_params`` is given.
      target_params: fraction of the trainable parameters to keep.
      importance: ``"l1"``, ``"bn_gamma"`` or ``"taylor"`` (needs ``batches``).
      round_to: kept channel counts are multiples of this.
      min_channels: the fewest channels any group keeps (default ``round_to``).
      min_fraction: the smallest fraction of its channels any group keeps (0: no floor); with
        ``steps=N`` each step keeps ``min_fraction ** (1 / N)`` of what the step before left.
      skip: groups to leave whole: names (their first producer layer, see ``channel_groups``)
        or ``fnmatch`` patterns of them (``"stem"``, ``"*_project"``).
      batches: ``(images, labels)`` batches for ``taylor`` (iterated once per step: a list or
        a ``tf.data.Dataset``, not a generator).
      loss: ``loss(labels, outputs)`` for ``taylor``; default cross-entropy.
      steps: prune in this many steps along a geometric schedule: step ``k`` brings the model
        to ``target ** (k / steps)`` of the dense cost, its importance measured on the model
        the previous step left (and ``fine_tune`` trained).
      fine_tune: ``fine_tune(model)``, called between steps with the model of each step but the
        last, to train it in place (compile and fit it); None: no training between steps.
      return_plan: also return the ``PruningPlan`` (``steps=1`` only: each step plans on its
        own graph).

    Returns:
      The pruned ``keras.Model`` (and the plan when ``return_plan``).
    """
    if target_params is not None:
        target_macs = None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer.")
    if steps > 1 and return_plan:
        raise ValueError("return_plan needs steps=1: each step plans on its own graph.")
    if not 0.0 <= min_fraction < 1.0:
        raise ValueError(f"min_fraction={min_fraction!r} must be in [0, 1).")
    target, index = _target(target_macs, target_params)
    dense = None
    for step in range(1, steps + 1):
        graph = ChannelGraph(model)
        scores = unit_scores(graph, importance, batches=batches, loss=loss)
        costs = CostModel(graph)
        current = costs.total(set())[index]
        dense = current if dense is None else dense
        # This step's goal as a fraction of the current model (rounding may have overshot it).
        fraction = min(1.0, target ** (step / steps) * dense / current)
        decided = plan(
            graph,
            scores,
            target_macs=fraction if index == 0 else None,
            target_params=fraction if index == 1 else None,
            round_to=round_to,
            min_channels=min_channels,
            min_fraction=min_fraction ** (1.0 / steps),
            skip=tuple(skip),
            costs=costs,
        )
        model = apply_plan(graph, decided.removed)
        if step < steps and fine_tune is not None:
            fine_tune(model)
    return (model, decided) if return_plan else model


# ---------------------------------------------------------------------------------------------
# config.channel_pruning

_KEYS = (
    "target_macs",
    "target_params",
    "importance",
    "round_to",
    "min_fraction",
    "steps",
    "fine_tune_steps",
    "skip",
)


def is_enabled(section) -> bool:
    """Channel pruning is on when ``target_macs`` or ``target_params`` is set."""
    return section.get("target_macs") is not None or section.get("target_params") is not None


def validate(section) -> None:
    """Checks every ``config.channel_pruning`` key before any work.

    Raises:
      ValueError: naming the bad key, its value and what is accepted.
    """
    from configs import validation

    prefix = "channel_pruning."
    validation.check_keys(section, _KEYS, prefix)
    for key in ("target_macs", "target_params"):
        validation.check_range(
            section, key, low=0.0, high=1.0, low_open=True, optional=True, prefix=prefix
        )
    validation.require(
        section.target_macs is None or section.target_params is None,
        "target_params",
        section.target_params,
        f"is invalid with config.channel_pruning.target_macs={section.target_macs}: set one",
        prefix,
    )
    validation.check_choice(section, "importance", IMPORTANCES, prefix)
    validation.check_range(section, "round_to", low=1, integer=True, prefix=prefix)
    validation.check_range(
        section, "min_fraction", low=0.0, high=1.0, high_open=True, prefix=prefix
    )
    validation.check_range(section, "steps", low=1, integer=True, prefix=prefix)
    validation.check_range(
        section, "fine_tune_steps", low=1, integer=True, optional=True, prefix=prefix
    )
    validation.require(
        isinstance(section.skip, str), "skip", section.skip, "must be a string", prefix
    )


def prune_from_config(
    model: keras.Model,
    section,
    *,
    batches=None,
    fine_tune=None,
    completed: int = 0,
    dense_cost: tuple[int, int] | None = None,
) -> keras.Model:
    """``prune_channels`` with ``config.channel_pruning``'s settings: the pruned model.

    Args:
      model: the dense model; or, continuing a gradual pruning that stopped (a resumed run), the
        model its first ``completed`` steps left.
      section: ``config.channel_pruning``.
      batches: training batches (``taylor``).
      fine_tune: ``fine_tune(model)`` between steps (see ``prune_channels``).
      completed: steps of ``section.steps`` already taken to reach ``model``.
      dense_cost: ``(macs, params)`` of the dense model, when ``completed > 0``: the budget
        stays a fraction of it, and the remaining steps continue the same geometric schedule
        (step ``k`` of ``steps`` still reaches ``target ** (k / steps)`` of the dense cost).
    """
    target_macs, target_params = section.target_macs, section.target_params
    if completed:
        target, index = _target(target_macs, target_params)
        current = model_cost(model).total
        fraction = min(1.0, target * dense_cost[index] / (current.macs, current.params)[index])
        target_macs, target_params = (fraction, None) if index == 0 else (None, fraction)
    return prune_channels(
        model,
        target_macs,
        target_params=target_params,
        importance=section.importance,
        round_to=section.round_to,
        # Per step the floor is min_fraction ** (1 / steps); the remaining steps keep that rate.
        min_fraction=section.min_fraction ** ((section.steps - completed) / section.steps),
        skip=tuple(name.strip() for name in section.skip.split(",") if name.strip()),
        batches=batches,
        steps=section.steps - completed,
        fine_tune=fine_tune,
    )


def kept_channels(dense: keras.Model, pruned: keras.Model) -> dict[str, tuple[int, int]]:
    """Group name -> ``(channels in pruned, channels in dense)``, for every group of ``dense``.

    Read from the two models, so it holds however many steps (or runs) ``pruned`` took;
    ``PruningPlan.kept`` is the same for one step.
    """
    pruned_channels = {g.name: g.channels for g in ChannelGraph(pruned).groups}
    return {
        g.name: (pruned_channels.get(g.name, g.channels), g.channels)
        for g in ChannelGraph(dense).groups
    }
