"""The end of a run in numbers: what the model costs, what was exported, how fast it runs.

``build`` gives ``metrics.json["summary"]``; ``format_summary`` the block ``train.py`` prints last,
whose final line says how to evaluate the file a phone would run.
"""

from __future__ import annotations

import os

from architectures.cost import format_count, model_cost
from compression import pruning
from deploy import export
from deploy.workdir import Workdir

# The file a phone runs, in order of preference, for the closing "evaluate it" line.
_SHIPPED = ("tflite_int8", "tflite", "keras")


def build(model, paths: dict[str, str], root: str, *, image_size: int) -> dict:
    """``{"params", "macs", "image_size", "files": {format: {"path", "bytes"[, "latency_ms_b1"]}}}``.

    Args:
      model: the trained model (pruning wrappers are looked through).
      paths: the exported files (``deploy.export.export_model``).
      root: the run directory; file paths are given relative to it.
      image_size: the side of the square input the costs are counted at.
    """
    cost = model_cost(pruning.strip(model)).total
    files = export.describe_exports(paths)
    for entry in files.values():
        entry["path"] = os.path.relpath(entry["path"], root)
    return {
        "params": int(cost.params),
        "macs": int(cost.macs),
        "image_size": int(image_size),
        "files": files,
    }


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.2f} MB" if size >= 2**17 else f"{size / 2**10:.0f} KB"


def format_summary(metrics: dict, root: str) -> str:
    """The closing lines: accuracy, cost, every exported file with its size and TFLite speed."""
    final, summary = metrics["final"], metrics["summary"]
    size = summary["image_size"]
    # The task's validation figures (val_top1/val_top5 or val_miou/val_pixel_accuracy), then loss.
    scores = sorted(
        (
            key
            for key, value in final.items()
            if key.startswith("val_") and key != "val_loss" and isinstance(value, float)
        ),
    ) + ["val_loss"]
    lines = [
        f"Finished {final['epochs']} epochs ({final['steps']} steps): "
        + " ".join(f"{key}={final[key]:.4f}" for key in scores)
        + f". Metrics in {Workdir(root).metrics_json}.",
        f"{metrics['model']}: {format_count(summary['params'])} parameters, "
        f"{format_count(summary['macs'])} multiply-adds at {size}x{size}.",
        f"Exported to {Workdir(root).export}:",
    ]
    for entry in summary["files"].values():
        line = (
            f"  {os.path.basename(entry['path'].rstrip('/')):<28} {_megabytes(entry['bytes']):>9}"
        )
        if "latency_ms_b1" in entry:
            line += f"   {entry['latency_ms_b1']:.2f} ms per image (TFLite, batch 1)"
        lines.append(line)
    shipped = next((summary["files"][f] for f in _SHIPPED if f in summary["files"]), None)
    if shipped is not None:
        lines.append(
            f"Evaluate it: python evaluate.py --model={os.path.join(root, shipped['path'])}"
        )
    return "\n".join(lines)
