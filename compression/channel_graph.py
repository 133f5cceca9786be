"""Which channels of a functional tf_keras model must be removed together.

Every channel of every tensor in the graph gets a *unit* id. A layer that creates channels (a
convolution, a dense layer) gives its outputs fresh ids; a layer that passes channels through
(batch norm, activations, pooling, padding, dropout, a depthwise convolution) gives its outputs
its inputs' ids; ``Add``/``Multiply``/... merge the ids of their inputs channel by channel;
``Concatenate`` places its inputs' ids side by side; ``ChannelShuffle`` permutes them and
``ChannelSplit`` cuts them. Removing a unit removes every channel that carries its id, in every
tensor, so the thinner network computes exactly what the wide one computed on the surviving
channels once the removed channels contribute nothing downstream.

Three structures must keep equal-sized parts after a removal, and are handled by tying units
across the parts (so a unit is removed from every part at once):

* grouped convolutions (``GroupConv2D``, ``Conv2D(groups>1)``): channel ``i`` of each output
  group; on the input, each group must only lose as many channels, so units confined to one
  group are tied rank by rank with those of the other groups (``_Units.tie_balanced``: after a
  shuffle these need not sit at the same positions) and units left uneven are kept; the group
  count stays, the per-group width shrinks;
* ``ChannelShuffle(g)``: channel ``i`` of each of the ``g`` groups (removing column ``i`` of the
  ``(g, C/g)`` view commutes with the transpose);
* ``ChannelSplit(n)``: channel ``i`` of each of the ``n`` parts.

A layer the graph does not know (a ``Reshape``, a ``Flatten`` of a feature map, a softmax over
channels, a nested model, a tf-op layer, ...) is a *barrier*: the units it reads and writes are
never removed. It is logged, never an error. The model's inputs and outputs are barriers too, so
the classifier's output and the input image keep their channels.

A *channel group* is what one pruning decision is about: the units produced by the same set of
producer layers (the outputs of every convolution joined by residual ``Add``s form one group; a
convolution feeding only pass-through layers forms its own).

    from compression import channel_groups
    for group in channel_groups(model):
        print(group.name, group.channels, group.layers)
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers.activations import HardSigmoid, HardSwish  # noqa: E402
from layers.channel_shuffle import ChannelShuffle  # noqa: E402
from layers.channel_split import ChannelSplit  # noqa: E402
from layers.depthwise_separable import DepthwiseSeparableConv2D  # noqa: E402
from layers.grouped import GroupConv2D  # noqa: E402
from layers.spatial_separable import SpatialSeparableConv2D  # noqa: E402

_LOG = logging.getLogger(__name__)

# What a layer does to channels; surgery (``channel_pruning``) slices weights by this kind.
CONV = "conv"  # Conv2D / GroupConv2D: input (per group) and output channels
DENSE = "dense"
DEPTHWISE = "depthwise"  # DepthwiseConv2D: output channel c·dm + j is input channel c's
SEPARABLE = "separable"  # depthwise (input ids) then pointwise (fresh output ids)
SPATIAL = "spatial"  # SpatialSeparableConv2D: input -> own inner ids -> fresh output ids
BATCH_NORM = "batch_norm"
PASS = "pass"  # no weights, channel ids unchanged (activations, pooling, merges, shuffles)
BARRIER = "barrier"  # unknown: its channels are never pruned, its weights copied as they are

PRODUCERS = (CONV, DENSE, SEPARABLE, SPATIAL)

# Layers that change no channel: each output channel is a function of the same input channel.
_ELEMENTWISE = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.ThresholdedReLU,
    keras.layers.Dropout,  # SpatialDropout2D, AlphaDropout, ... subclass it
    keras.layers.GaussianNoise,
    keras.layers.ActivityRegularization,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.UpSampling2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    HardSigmoid,
    HardSwish,
)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
# Activations that mix channels (a softmax over the channel axis).
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels that are kept or removed together, unit by unit.

    Attributes:
      name: the first producer layer of the group (in graph order).
      layers: every producer layer whose output channels belong to the group.
      units: the unit ids of the group (one pruning step removes whole units).
      channels: the group's channels in its first producer's output.
      channels_per_unit: channels one unit occupies there (the group count for a grouped conv).
    """

    name: str
    layers: tuple[str, ...]
    units: tuple[int, ...]
    channels: int
    channels_per_unit: int


@dataclasses.dataclass
class LayerChannels:
    """How one layer maps channels: its kind and the unit ids of what it reads and writes.

    ``inputs`` and ``outputs`` hold one id array per tensor of the layer's first call (later
    calls of a shared layer are tied to it); ``inner`` the ids of a separable layer's
    intermediate channels (None for other kinds); ``groups`` the group count of a grouped conv.
    """

    layer: keras.layers.Layer
    kind: str
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    inner: np.ndarray | None = None
    groups: int = 1
    input_shapes: list = dataclasses.field(default_factory=list)  # one entry per call


class _Units:
    """Union-find over unit ids, plus the ids that may never be removed."""

    def __init__(self):
        self.parent: list[int] = []
        self.fixed: set[int] = set()

    def fresh(self, count: int, fixed: bool = False) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        ids = np.arange(start, start + count, dtype=np.int64)
        if fixed:
            self.fixed.update(ids.tolist())
        return ids

    def find(self, unit: int) -> int:
        root = unit
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[unit] != root:  # path compression
            self.parent[unit], unit = root, self.parent[unit]
        return root

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx

    def tie_parts(self, ids: np.ndarray, parts: int) -> None:
        """Ties channel ``i`` of each of ``parts`` equal contiguous parts of ``ids``."""
        if parts > 1:
            view = ids.reshape(parts, -1)
            for part in view[1:]:
                self.tie(view[0], part)

    def tie_balanced(self, ids: np.ndarray, parts: int) -> None:
        """Ties units so that removing one takes equally many channels from each of ``parts``
        equal contiguous parts of ``ids`` (a grouped convolution's input groups).

        A unit already spread evenly over the parts needs nothing. Units confined to one part
        are tied rank by rank (in channel order) with the units of the same channel count
        confined to each other part: for plain one-channel units this is ``tie_parts``, but
        it also pairs units that a shuffle has laid out unevenly. Whatever is still uneven
        after every tie of the graph is fixed (``ChannelGraph._finish``).
        """
        if parts <= 1:
            return
        view = self.resolve(ids).reshape(parts, -1)
        counts = [collections.Counter(part.tolist()) for part in view]
        spread = collections.Counter(u for c in counts for u in c)
        for count in sorted({n for c in counts for n in c.values()}):
            ranked = [[u for u, n in c.items() if n == count and spread[u] == 1] for c in counts]
            paired = min(len(r) for r in ranked)
            for others in ranked[1:]:
                self.tie(np.array(ranked[0][:paired]), np.array(others[:paired]))

    def resolve(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.find(u) for u in ids.tolist()], dtype=np.int64)


def _channels(tensor) -> int:
    dim = tensor.shape[-1] if tensor.shape.rank else None
    return int(dim) if dim is not None else 0


def _last_axis(axis, rank: int) -> bool:
    return axis in (-1, rank - 1)


def _kind(layer: keras.layers.Layer, node) -> str:
    """The kind of ``layer`` as called at ``node`` (``BARRIER`` for anything unknown)."""
    inputs = node.keras_inputs
    rank = inputs[0].shape.rank if inputs else None
    if isinstance(layer, (GroupConv2D, keras.layers.Conv2D)) and not isinstance(
        layer, keras.layers.Conv2DTranspose
    ):
        return CONV
    if isinstance(layer, (DepthwiseSeparableConv2D, keras.layers.SeparableConv2D)):
        return SEPARABLE
    if isinstance(layer, SpatialSeparableConv2D):
        return SPATIAL
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return DEPTHWISE
    if isinstance(layer, keras.layers.Dense):
        return DENSE
    if isinstance(layer, keras.layers.BatchNormalization):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return BATCH_NORM if len(axes) == 1 and _last_axis(axes[0], rank) else BARRIER
    if isinstance(layer, keras.layers.Activation):
        name = keras.activations.serialize(layer.activation)
        return BARRIER if name in _MIXING_ACTIVATIONS else PASS
    if isinstance(layer, (*_ELEMENTWISE, ChannelShuffle, ChannelSplit)):
        return PASS
    if isinstance(layer, keras.layers.Flatten):
        return PASS if rank == 2 else BARRIER  # (B, C) stays (B, C); a feature map is mixed
    if isinstance(layer, _MERGES):
        channels = {_channels(t) for t in inputs}
        return PASS if len(channels) == 1 else BARRIER  # broadcast over channels: barrier
    if isinstance(layer, keras.layers.Concatenate):
        return PASS
    return BARRIER


class ChannelGraph:
    """The unit ids of every tensor and layer of a functional model, and its channel groups.

    Args:
      model: a built functional (or Sequential) ``keras.Model``.

    Attributes:
      model: the model.
      layers: layer name -> ``LayerChannels``.
      tensors: ``id(KerasTensor)`` -> unit ids of its channels (resolved to group roots).
      barriers: names of the layers treated as barriers.
      groups: the prunable ``ChannelGroup``s, in graph order.
    """

    def __init__(self, model: keras.Model):
        if not getattr(model, "_is_graph_network", False):
            raise ValueError(
                f"Channel pruning needs a functional or Sequential model; {model.name!r} is "
                "subclassed. Build it with the functional API (keras.Model(inputs, outputs))."
            )
        self.model = model
        self.layers: dict[str, LayerChannels] = {}
        self.barriers: list[str] = []
        units = _Units()
        tensors: dict[int, np.ndarray] = {}
        depths = model._nodes_by_depth  # tf_keras: depth -> nodes; inputs have the largest
        for depth in sorted(depths, reverse=True):
            for node in depths[depth]:
                outputs = tf.nest.flatten(node.outputs)
                if node.is_input:
                    for tensor in outputs:
                        tensors[id(tensor)] = units.fresh(_channels(tensor), fixed=True)
                    continue
                ids_in = [tensors[id(t)] for t in node.keras_inputs]
                ids_out = self._visit(node, ids_in, outputs, units)
                for tensor, ids in zip(outputs, ids_out, strict=True):
                    tensors[id(tensor)] = ids
        for tensor in model.outputs:  # the classifier's (or any head's) outputs stay whole
            units.fixed.update(tensors[id(tensor)].tolist())
        self._finish(units, tensors)

    def _visit(self, node, ids_in, outputs, units: _Units) -> list[np.ndarray]:
        layer = node.layer
        kind = _kind(layer, node)
        shapes = [tuple(t.shape) for t in node.keras_inputs]
        known = self.layers.get(layer.name)
        if known is not None:  # a shared layer: every call is pruned like the first
            known.input_shapes.append(shapes)
            for a, b in zip(known.inputs, ids_in, strict=True):
                units.tie(a, b)
            if kind in PRODUCERS:  # the same weights write the same output channels
                return known.outputs
        inner, groups = None, 1
        if kind == BARRIER:
            if known is None:
                self.barriers.append(layer.name)
                _LOG.info(
                    "Channel pruning: %s (%s) is a barrier; its channels are kept.",
                    layer.name,
                    type(layer).__name__,
                )
            for ids in ids_in:
                units.fixed.update(ids.tolist())
            ids_out = [units.fresh(_channels(t), fixed=True) for t in outputs]
        else:
            ids_out, inner, groups = self._map(layer, kind, ids_in, outputs, units)
        if known is None:
            self.layers[layer.name] = LayerChannels(
                layer, kind, ids_in, ids_out, inner, groups, [shapes]
            )
        elif kind != BARRIER:
            for a, b in zip(known.outputs, ids_out, strict=True):
                units.tie(a, b)
        return ids_out

    @staticmethod
    def _map(layer, kind, ids_in, outputs, units: _Units):
        """Output unit ids, inner ids and group count of a known layer."""
        inner, groups = None, 1
        if kind == CONV:
            groups = int(getattr(layer, "groups", 1))
            units.tie_balanced(ids_in[0], groups)
            out = units.fresh(_channels(outputs[0]))
            units.tie_parts(out, groups)
            return [out], inner, groups
        if kind in (DENSE, SEPARABLE):
            return [units.fresh(_channels(outputs[0]))], inner, groups
        if kind == SPATIAL:
            middle = layer.intermediate_filters or layer.filters
            return [units.fresh(_channels(outputs[0]))], units.fresh(middle), groups
        if kind == DEPTHWISE:
            return [np.repeat(ids_in[0], layer.depth_multiplier)], inner, groups
        if isinstance(layer, ChannelShuffle):
            units.tie_parts(ids_in[0], layer.groups)
            return [ids_in[0].reshape(layer.groups, -1).T.reshape(-1)], inner, groups
        if isinstance(layer, ChannelSplit):
            units.tie_parts(ids_in[0], layer.num_splits)
            return list(ids_in[0].reshape(layer.num_splits, -1)), inner, groups
        if isinstance(layer, keras.layers.Concatenate):
            rank = outputs[0].shape.rank
            if _last_axis(layer.axis, rank):
                return [np.concatenate(ids_in)], inner, groups
        if len(ids_in) > 1:  # merges, and concatenation along another axis
            for ids in ids_in[1:]:
                units.tie(ids_in[0], ids)
        return [ids_in[0]], inner, groups

    def _finish(self, units: _Units, tensors: dict[int, np.ndarray]) -> None:
        fixed = {units.find(u) for u in units.fixed}
        self.tensors = {key: units.resolve(ids) for key, ids in tensors.items()}
        for info in self.layers.values():
            info.inputs = [units.resolve(ids) for ids in info.inputs]
            info.outputs = [units.resolve(ids) for ids in info.outputs]
            if info.inner is not None:
                info.inner = units.resolve(info.inner)
            if info.kind == CONV and info.groups > 1:  # uneven over the groups: kept
                parts = info.inputs[0].reshape(info.groups, -1)
                counts = [collections.Counter(part.tolist()) for part in parts]
                for unit in counts[0].keys() | set().union(*counts[1:]):
                    if len({c.get(unit, 0) for c in counts}) > 1:
                        fixed.add(unit)
        self.fixed = fixed
        producers: dict[int, list[str]] = collections.defaultdict(list)
        first_ids: dict[int, np.ndarray] = {}
        for name, info in self.layers.items():
            produced = [info.outputs[0]] if info.kind in PRODUCERS else []
            if info.kind == SPATIAL:
                produced.append(info.inner)
            for ids in produced:
                for unit in dict.fromkeys(ids.tolist()):
                    if unit not in fixed:
                        producers[unit].append(name)
                        first_ids.setdefault(unit, ids)
        by_key: dict[tuple, list[int]] = {}
        for unit, names in producers.items():
            by_key.setdefault(tuple(names), []).append(unit)
        groups = []
        for names, group_units in by_key.items():
            ids = first_ids[group_units[0]]
            per_unit = int(np.count_nonzero(ids == group_units[0]))
            groups.append(
                ChannelGroup(
                    name=names[0],
                    layers=names,
                    units=tuple(group_units),
                    channels=int(np.count_nonzero(np.isin(ids, group_units))),
                    channels_per_unit=per_unit,
                )
            )
        self.groups = groups

    def kept_positions(self, ids: np.ndarray, removed: set[int]) -> np.ndarray:
        """Indices of the channels of an id array that survive removing ``removed`` units."""
        if not removed:
            return np.arange(len(ids))
        return np.flatnonzero(~np.isin(ids, np.fromiter(removed, dtype=np.int64)))


def channel_groups(model: keras.Model) -> list[ChannelGroup]:
    """The channel groups of ``model`` that can be pruned (see the module docstring).

    Args:
      model: a built functional or Sequential tf_keras model.

    Returns:
      ``ChannelGroup``s in graph order; layers the graph does not know are logged as barriers.
    """
    return ChannelGraph(model).groups
