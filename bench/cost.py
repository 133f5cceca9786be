"""``benchmark.py cost``: per-layer parameters and multiply-adds, comparisons, the papers' claims.

    python benchmark.py cost --model=shufflenet_v1_g3_100
    python benchmark.py cost --compare=mobilenet_v1_100,fd_mobilenet_100,mobilenet_v2_100
    python benchmark.py cost --claims
    python benchmark.py cost --write_docs     # regenerates docs/architectures.md's tables

Counting follows ``docs/papers.md``: conv and dense multiply-adds, Keras trainable params.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Registered model name for the per-layer table.")
flags.DEFINE_integer("image_size", None, "Square input size; default: each variant's own.")
flags.DEFINE_integer("num_classes", None, "Classifier width; default: the variant's (1000).")
flags.DEFINE_list("compare", [], "Registered model names to put side by side.")
flags.DEFINE_bool("claims", False, "Recompute the papers' cost claims from layer costs.")
flags.DEFINE_bool("write_docs", False, "Regenerate the tables of docs/architectures.md.")
flags.DEFINE_bool("skip_free", False, "Per-layer table: hide rows with no params and no MACs.")
flags.DEFINE_bool("json", False, "Print one JSON object instead of tables.")

DOCS_FILE = "architectures.md"


def _build(name: str):
    from architectures import create_model

    size = FLAGS.image_size
    return create_model(
        name, input_shape=(size, size, 3) if size else None, num_classes=FLAGS.num_classes
    )


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}%"


def _count(value: float | None) -> str:
    from architectures.cost import format_count

    return "" if value is None else format_count(value)


def claims_markdown(claims) -> str:
    lines = ["| claim | formula | from layer costs | expected | holds |", "|---|---|---|---|---|"]
    for c in claims:
        expected = "" if c.expected is None else f"{c.expected:.4f}"
        lines.append(
            f"| {c.name} | {c.formula} | {c.measured:.4f} | {expected} | "
            f"{'yes' if c.holds else 'NO'} |"
        )
    return "\n".join(lines)


def fidelity_markdown(rows) -> str:
    lines = [
        "| variant | input | min input | params | paper params | diff | MACs | paper MACs | diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r.name}` | {r.input_size} | {r.min_input_size} | {r.params:,} | "
            f"{_count(r.paper_params)} | {_percent(r.params_diff_percent)} | {_count(r.macs)}"
            f"{' †' if r.macs_exclude_classifier else ''} | "
            f"{_count(r.paper_macs)} | {_percent(r.macs_diff_percent)} |"
        )
    if any(r.macs_exclude_classifier for r in rows):
        lines.append("\n† without the final classifier, as the paper counts it.")
    return "\n".join(lines)


def write_docs(claims, rows) -> str:
    from bench import report

    path = os.path.join(report.DOCS_DIR, DOCS_FILE)
    report.update_section(path, "variants", fidelity_markdown(rows))
    report.update_section(path, "claims", claims_markdown(claims))
    return path


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}; every option is a --flag.")
    if not (FLAGS.model or FLAGS.compare or FLAGS.claims or FLAGS.write_docs):
        raise app.UsageError("Nothing to do: pass --model, --compare, --claims or --write_docs.")
    from architectures import get_model_spec
    from architectures.cost import fidelity, format_comparison, format_report, model_cost

    for name in [FLAGS.model, *FLAGS.compare]:
        if name:
            try:
                get_model_spec(name)
            except ValueError as e:
                raise app.UsageError(str(e)) from None

    result, text = {}, []
    if FLAGS.model:
        model_report = model_cost(_build(FLAGS.model))
        result["model"] = model_report.to_dict()
        text.append(format_report(model_report, skip_free=FLAGS.skip_free))
    if FLAGS.compare:
        reports = [model_cost(_build(name)) for name in FLAGS.compare]
        result["compare"] = [
            {key: value for key, value in r.to_dict().items() if key != "rows"} for r in reports
        ]
        text.append(format_comparison(reports))
    claims = fidelity.seed_claims() if (FLAGS.claims or FLAGS.write_docs) else []
    if FLAGS.claims:
        result["claims"] = [vars(c) for c in claims]
        text.append(claims_markdown(claims))
    if FLAGS.write_docs:
        path = write_docs(claims, fidelity.variant_fidelity())
        result["docs"] = path
        text.append(f"wrote {path}")
    print(json.dumps(result, indent=1) if FLAGS.json else "\n\n".join(text))
