"""What models cost, and how that compares with the papers.

``report.py``: per-layer parameters and multiply-adds of any Keras model (``model_cost``) and
their tables. ``fidelity.py``: the papers' cost claims recomputed from layer costs, and every
registered variant's parameters and MACs beside its paper's (``docs/architectures.md``).
A layer's own cost is ``layers.cost``.
"""

from architectures.cost.report import (
    CATEGORIES,
    CostReport,
    CostRow,
    format_comparison,
    format_count,
    format_report,
    model_cost,
)

__all__ = [
    "CATEGORIES",
    "CostReport",
    "CostRow",
    "format_comparison",
    "format_count",
    "format_report",
    "model_cost",
]
