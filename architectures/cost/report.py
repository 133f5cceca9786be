"""Per-layer parameters and multiply-adds of any Keras model, and their text tables.

    from architectures.cost import model_cost, format_report
    print(format_report(model_cost(model)))

Costs come from ``layers.cost.layer_cost`` (the layers' own ``compute_cost`` where they have one),
so the papers' conventions apply: conv and dense multiply-adds only, Keras *trainable* parameters.
Nested models are walked (rows named ``outer/inner``) and tfmot pruning wrappers are looked
through. A layer called several times costs MACs on every call but owns its parameters once.
"""

from __future__ import annotations

import dataclasses

import tf_keras as keras

from layers.cost import LayerCost, layer_cost
from layers.wrappers import unwrap

# Layer types grouped for the side-by-side comparison of where the multiply-adds go.
CATEGORIES = ("conv 1x1", "conv kxk", "grouped conv", "depthwise", "separable", "dense", "other")


@dataclasses.dataclass(frozen=True)
class CostRow:
    """One call of one layer.

    Attributes:
      layer: the layer name, prefixed by enclosing model names (``backbone/conv1``).
      type: the layer class, e.g. ``Conv2D`` or ``PruneLowMagnitude(Conv2D)``.
      category: one of ``CATEGORIES``.
      output_shape: the output shape without the batch dimension.
      params: trainable parameters (0 on repeated calls of a shared layer).
      macs: multiply-adds of this call.
      share: ``macs`` as a fraction of the model's total.
    """

    layer: str
    type: str
    category: str
    output_shape: tuple
    params: int
    macs: int
    share: float


@dataclasses.dataclass(frozen=True)
class CostReport:
    """All rows of a model plus totals; ``total_* == sum(row.*)``."""

    model: str
    input_shape: tuple
    rows: tuple[CostRow, ...]
    total_params: int
    total_macs: int

    @property
    def total(self) -> LayerCost:
        """The totals as a ``LayerCost(macs, params)``."""
        return LayerCost(self.total_macs, self.total_params)

    def macs_by_category(self) -> dict[str, int]:
        """Multiply-adds summed per ``CATEGORIES`` entry (all keys present)."""
        totals = dict.fromkeys(CATEGORIES, 0)
        for row in self.rows:
            totals[row.category] += row.macs
        return totals

    def to_dict(self) -> dict:
        """JSON-able form: totals, the category breakdown and every row."""
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "macs_by_category": self.macs_by_category(),
            "rows": [
                {**dataclasses.asdict(row), "output_shape": list(row.output_shape)}
                for row in self.rows
            ],
        }


def _unwrap(layer: keras.layers.Layer) -> tuple[keras.layers.Layer, str]:
    """The layer that does the work and its display type (Keras wrappers are looked through)."""
    inner = unwrap(layer)
    if inner is not layer:
        return inner, f"{type(layer).__name__}({type(inner).__name__})"
    return layer, type(layer).__name__


def _category(layer: keras.layers.Layer) -> str:
    """Where a layer's multiply-adds are filed in ``macs_by_category``."""
    name = type(layer).__name__
    if name in ("DepthwiseSeparableConv2D", "SpatialSeparableConv2D") or isinstance(
        layer, keras.layers.SeparableConv2D
    ):
        return "separable"
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise"
    if name == "GroupConv2D" or (
        isinstance(layer, keras.layers.Conv2D) and getattr(layer, "groups", 1) > 1
    ):
        return "grouped conv"
    if isinstance(layer, keras.layers.Conv2D):
        return "conv 1x1" if tuple(layer.kernel_size) == (1, 1) else "conv kxk"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    return "other"


def _strip_batch(shape) -> tuple:
    if isinstance(shape, list):
        return tuple(_strip_batch(s) for s in shape)
    return tuple(shape)[1:]


def _node_shapes(model: keras.Model, layer: keras.layers.Layer) -> list[tuple]:
    """``(input_shape, output_shape)`` for every call of ``layer`` inside ``model``'s graph."""
    # tf_keras keys a model's own calls as "<layer>_ib-<index>" (functional._make_node_key).
    network_nodes = getattr(model, "_network_nodes", None)
    shapes = []
    for index, node in enumerate(layer.inbound_nodes):
        if network_nodes is not None and f"{layer.name}_ib-{index}" not in network_nodes:
            continue  # a call belonging to another model that shares this layer
        in_shape, out_shape = node.input_shapes, node.output_shapes
        in_shape = [tuple(s) for s in in_shape] if isinstance(in_shape, list) else tuple(in_shape)
        out_shape = (
            [tuple(s) for s in out_shape] if isinstance(out_shape, list) else tuple(out_shape)
        )
        shapes.append((in_shape, out_shape))
    return shapes


def _rows(model: keras.Model, prefix: str) -> list[tuple]:
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        name = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            rows.extend(_rows(layer, prefix=f"{name}/"))
            continue
        inner, type_name = _unwrap(layer)
        for call, (in_shape, out_shape) in enumerate(_node_shapes(model, layer)):
            cost = layer_cost(layer, list(in_shape) if isinstance(in_shape, list) else in_shape)
            rows.append(
                (
                    name if call == 0 else f"{name}#{call}",
                    type_name,
                    _category(inner),
                    _strip_batch(out_shape),
                    cost.params if call == 0 else 0,
                    cost.macs,
                )
            )
    return rows


def model_cost(model: keras.Model) -> CostReport:
    """Per-layer parameters and multiply-adds of a built functional or Sequential model.

    Args:
      model: a ``keras.Model`` built on a known input shape (nested models and tfmot-wrapped
        layers allowed).

    Returns:
      A ``CostReport`` whose totals are the sums of its rows.

    Raises:
      ValueError: the model is subclassed or unbuilt, so its layers' input shapes are unknown.
    """
    if not getattr(model, "_is_graph_network", False) or not model.built:
        raise ValueError(
            f"model_cost needs a built functional or Sequential model; {model.name!r} is "
            f"{'subclassed' if model.built else 'not built'}. Build it on an input shape, "
            f"e.g. keras.Sequential([keras.Input((224, 224, 3)), ...])."
        )
    raw = _rows(model, prefix="")
    total_macs = sum(r[5] for r in raw)
    rows = tuple(CostRow(*r, share=(r[5] / total_macs if total_macs else 0.0)) for r in raw)
    input_shape = _strip_batch(model.inputs[0].shape) if len(model.inputs) == 1 else ()
    return CostReport(
        model=model.name,
        input_shape=tuple(int(d) if d is not None else None for d in input_shape),
        rows=rows,
        total_params=sum(r.params for r in rows),
        total_macs=total_macs,
    )


def format_count(value: float) -> str:
    """``569_000_000 -> '569.00M'``, ``25_500 -> '25.50K'``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:g}"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]

    def line(cells):
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_report(report: CostReport, *, skip_free: bool = False) -> str:
    """A per-layer text table (layer, type, output shape, params, MACs, share) with totals.

    Args:
      report: from ``model_cost``.
      skip_free: leave out rows with neither parameters nor multiply-adds (activations, adds).
    """
    body = [
        [
            row.layer,
            row.type,
            "x".join(str(d) for d in row.output_shape)
            if row.output_shape and not isinstance(row.output_shape[0], tuple)
            else str(row.output_shape),
            f"{row.params:,}",
            f"{row.macs:,}",
            f"{100 * row.share:.1f}%",
        ]
        for row in report.rows
        if not (skip_free and row.params == 0 and row.macs == 0)
    ]
    body.append(["total", "", "", f"{report.total_params:,}", f"{report.total_macs:,}", "100.0%"])
    shape = "x".join(str(d) for d in report.input_shape)
    title = (
        f"{report.model} @ {shape}: {format_count(report.total_params)} params, "
        f"{format_count(report.total_macs)} MACs"
    )
    header = ["layer", "type", "output shape", "params", "MACs", "share"]
    return title + "\n" + _table(header, body, right={3, 4, 5})


def format_comparison(reports: list[CostReport]) -> str:
    """Models side by side: params, MACs (and relative to the first), where the MACs go."""
    base = reports[0].total_macs or 1
    header = ["model", "input", "params", "MACs", "vs first", *CATEGORIES]
    body = []
    for report in reports:
        by_category = report.macs_by_category()
        total = report.total_macs or 1
        body.append(
            [
                report.model,
                "x".join(str(d) for d in report.input_shape),
                format_count(report.total_params),
                format_count(report.total_macs),
                f"{report.total_macs / base:.3f}",
                *(f"{100 * by_category[c] / total:.1f}%" for c in CATEGORIES),
            ]
        )
    return _table(header, body, right=set(range(2, len(header))))
