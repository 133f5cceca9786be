"""Evaluates saved models of any format: top-1, top-5, loss, per-class accuracy, latency.

    python evaluate.py --model=runs/digits_mnv2                 # a training workdir
    python evaluate.py --model=m.keras,m.tflite --data.source=digits --json
    python evaluate.py --model='runs/*/export/model_int8.tflite' --confusion_png=confusion.png

PATH (``--model``, repeatable, comma-separated, globs allowed) is one of:

* a training workdir: its ``config.json`` gives the data, the evaluation preprocessing (the
  variant's) and the seed; the model is ``DIR/export/model.keras``, else ``DIR/best/``, else the
  latest checkpoint in ``DIR/checkpoints/``. ``--data.*`` flags given explicitly still override;
* a ``.keras`` file, a SavedModel directory (run through its signature, Keras metadata or not) or
  a ``.tflite`` file. Inside a workdir (``DIR/export/model.tflite``), DIR's config is used as
  above. Otherwise data comes from ``--data.*`` (default: digits), the input size from the model,
  and the preprocessing is Inception [-1, 1] unless ``--preprocessing`` names another
  (``imagenet``, or a model name such as ``shufflenet_v1_g3_100`` for its defaults).

Prints a table (or, with ``--json``, one JSON object per model per line on stdout, with keys
``model, top1, top5, loss, examples, latency_ms_b1, latency_ms_bN, per_class, ...``; accuracies
are fractions). Segmentation models (data ``shapes`` or ``segfolder:<dir>``) report ``miou,
pixel_accuracy, per_class_iou, loss, pixels`` instead of the top-k keys, and ``--overlay_dir``
writes overlay PNGs (image | ground truth | prediction) of the first validation images. Latency is the median wall time of one call on random inputs, in milliseconds per
batch, at batch 1 and at ``--batch_size``. Exits 1 if any model failed, after trying them all.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from deploy import cli, console  # noqa: E402  (import no TensorFlow)

console.quiet_native_logs()  # before TensorFlow loads: its C++ start-up chatter is filtered out

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from configs import common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    "model",
    None,
    "Model PATH(s): workdir, .keras, SavedModel dir, .tflite; "
    "repeat the flag, separate with commas or use a glob.",
)
with cli.one_line_errors("evaluate.py"), cli.config_flag_errors("data"):
    config_flags.DEFINE_config_dict(
        "data",
        common.get_base_config().data,
        "Data to evaluate on (a workdir's config.json wins, except for "
        "--data.* flags given explicitly).",
    )
flags.DEFINE_bool("json", False, "Print one JSON object per model per line instead of a table.")
flags.DEFINE_integer("batch_size", 64, "Evaluation batch size, and N of the batch-N latency.")
flags.DEFINE_string(
    "confusion_png",
    "",
    "Write the confusion matrix to this PNG (with several models: FILE_<i>.png for the i-th).",
)
flags.DEFINE_string(
    "preprocessing",
    "",
    "inception | imagenet | <model name>; default: the workdir variant's, else inception.",
)
flags.DEFINE_integer("seed", 0, "Data seed for a model outside a workdir (synthetic data).")
flags.DEFINE_integer("latency_iterations", 20, "Timed calls per latency figure (median).")
flags.DEFINE_string(
    "overlay_dir",
    "",
    "Segmentation: write overlay PNGs (image | ground truth | prediction) of the first "
    "validation images here (with several models: DIR/<i>/ for the i-th).",
)
flags.mark_flag_as_required("model")

PER_CLASS_MAX = 20  # beyond this many classes the table omits per-class accuracy (see --json)


def _confusion_path(index: int, count: int) -> str:
    if count == 1:
        return FLAGS.confusion_png
    stem, extension = os.path.splitext(FLAGS.confusion_png)
    return f"{stem}_{index}{extension or '.png'}"


def _print_segmentation_table(results: list[dict]) -> None:
    from deploy.metrics import markdown_table

    headers = ("model", "kind", "images", "mIoU (%)", "pixel acc. (%)", "loss", "ms @1")
    rows = (
        (
            r["model"],
            r["kind"],
            r["examples"],
            f"{100 * r['miou']:.2f}",
            f"{100 * r['pixel_accuracy']:.2f}",
            f"{r['loss']:.4f}",
            f"{r['latency_ms_b1']:.2f}",
        )
        for r in results
    )
    print(markdown_table(headers, rows))
    for r in results:
        cells = ", ".join(
            f"{name}: {'-' if iou is None else f'{100 * iou:.1f}'}"
            for name, iou in r["per_class_iou"].items()
        )
        print(f"per-class IoU (%) of {r['model']}: {cells}")


def _print_table(results: list[dict]) -> None:
    from deploy.metrics import markdown_table

    segmentation = [r for r in results if "miou" in r]
    if segmentation:
        _print_segmentation_table(segmentation)
    results = [r for r in results if "miou" not in r]
    if not results:
        return

    headers = (
        "model",
        "kind",
        "examples",
        "top-1 (%)",
        "top-5 (%)",
        "loss",
        "ms @1",
        f"ms @{FLAGS.batch_size}",
    )
    print(
        markdown_table(
            headers,
            (
                (
                    r["model"],
                    r["kind"],
                    r["examples"],
                    f"{100 * r['top1']:.2f}",
                    f"{100 * r['top5']:.2f}",
                    f"{r['loss']:.4f}",
                    f"{r['latency_ms_b1']:.2f}",
                    f"{r['latency_ms_bN']:.2f}",
                )
                for r in results
            ),
        )
    )
    for r in results:
        if len(r["per_class"]) <= PER_CLASS_MAX:
            cells = ", ".join(
                f"{name}: {'-' if acc is None else f'{100 * acc:.1f}'}"
                for name, acc in r["per_class"].items()
            )
            print(f"per-class top-1 (%) of {r['model']}: {cells}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from deploy import paths as model_paths

    with cli.one_line_errors("evaluate.py"):
        paths = model_paths.expand_model_paths(FLAGS.model)
    from deploy import fileio, metrics  # after the path check: TensorFlow takes seconds
    from trainer import model_data

    overrides = config_flags.get_override_values(FLAGS["data"])
    results, failed = [], 0
    for index, path in enumerate(paths):
        try:
            model_and_data = model_data.load_with_data(
                path,
                FLAGS.data,
                data_overrides=overrides,
                preprocessing=FLAGS.preprocessing,
                batch_size=FLAGS.batch_size,
                seed=FLAGS.seed,
            )
            overlay_dir = FLAGS.overlay_dir
            if overlay_dir and len(paths) > 1:
                overlay_dir = os.path.join(overlay_dir, str(index))
            result, confusion = model_data.evaluate(
                model_and_data,
                latency_batch_size=FLAGS.batch_size,
                latency_iterations=FLAGS.latency_iterations,
                overlay_dir=overlay_dir,
            )
        except cli.USER_ERRORS as error:  # the next model may still work
            failed += 1
            print(f"evaluate.py: {path}: {cli.one_line(error)}", file=sys.stderr)
            continue
        if FLAGS.confusion_png:
            metrics.write_confusion_png(
                confusion,
                _confusion_path(index, len(paths)),
                model_and_data.data.class_names,
                title=path,
            )
        results.append(result)
        if FLAGS.json:
            print(fileio.dumps(result), flush=True)  # a NaN loss prints as null
    if results and not FLAGS.json:
        _print_table(results)
    if failed:
        sys.exit(f"evaluate.py: {failed} of {len(paths)} model(s) failed (see above).")


if __name__ == "__main__":
    app.run(main)
