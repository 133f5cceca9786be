"""Exports a trained model to Keras, SavedModel and four TFLite variants, then checks parity.

    python export.py --workdir=runs/digits_mnv2            # writes runs/digits_mnv2/export/
    python export.py --model=model.keras --data.source=digits --output_dir=out/

``--workdir=DIR`` exports DIR's model (``export/model.keras``, else ``best/``, else the latest
checkpoint) to ``DIR/export/`` (or ``--output_dir``), calibrating int8 on DIR's training data
(``config.json``) with its variant's preprocessing. ``--model=PATH`` (a ``.keras`` file) does the
same when PATH lies inside a workdir; otherwise it takes the data from ``--data.*`` (default:
digits) and the Inception [-1, 1] preprocessing unless ``--preprocessing`` names another. It
writes to ``<PATH without .keras>_export/``.

Files: model.keras, saved_model/ (signatures ``serving_default``: float images, and
``serving_image_bytes``: encoded JPEG/PNG/BMP/GIF bytes with decoding and evaluation
preprocessing inside), model.tflite (float32), model_float16.tflite, model_dynamic_range.tflite,
model_int8.tflite (int8 in and out). Pruned models are stripped first.

Then every file is reloaded (no custom code for SavedModel and TFLite) and run on real validation
images: Keras and SavedModel must match the in-memory model within 1e-5, float TFLite within
1e-4, quantised TFLite must keep top-1 within 1 point of float. The table is printed; the exit
status is 1 if parity breaks.
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
flags.DEFINE_string("workdir", "", "Training workdir to export (its config gives the data).")
flags.DEFINE_string("model", "", "A .keras file (or workdir) to export, instead of --workdir.")
flags.DEFINE_string("output_dir", "", "Where to write; default DIR/export or <PATH>_export.")
flags.DEFINE_string(
    "formats",
    "all",
    "Comma-separated: keras, saved_model, tflite, tflite_float16, tflite_dynamic_range, "
    "tflite_int8, onnx (the onnx extra); or all (every one but onnx).",
)
with cli.one_line_errors("export.py"), cli.config_flag_errors("data"):
    config_flags.DEFINE_config_dict(
        "data",
        common.get_base_config().data,
        "Data for calibration and parity with --model (a workdir's "
        "config.json wins, except for --data.* flags given explicitly).",
    )
flags.DEFINE_string(
    "preprocessing",
    "",
    "inception | imagenet | <model name>; default: the workdir variant's, else inception.",
)
flags.DEFINE_bool(
    "image_bytes_signature",
    True,
    "Add the SavedModel signature that takes encoded image bytes and preprocesses them inside.",
)
flags.DEFINE_integer("calibration_examples", 256, "Training images to calibrate int8 on.")
flags.DEFINE_integer("parity_examples", 1000, "Validation images for the parity check.")
flags.DEFINE_integer("batch_size", 64, "Batch size for reading data and predicting.")
flags.DEFINE_integer("seed", 0, "Data seed for a model outside a workdir (synthetic data).")


def _default_output_dir(path: str, kind: str) -> str:
    from deploy.workdir import Workdir

    if kind == "workdir":
        return Workdir(path).export
    return os.path.splitext(path.rstrip("/"))[0] + "_export"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if bool(FLAGS.workdir) == bool(FLAGS.model):
        sys.exit("export.py: pass exactly one of --workdir=DIR or --model=PATH.")
    from deploy import paths

    path = FLAGS.workdir or FLAGS.model
    with cli.one_line_errors("export.py"):
        kind = paths.detect_kind(path)
        if FLAGS.workdir and kind != "workdir":
            raise ValueError(
                f"--workdir='{path}' has no config.json; for a model file use --model={path}."
            )
    from deploy import export  # after the path check: TensorFlow takes seconds
    from trainer import model_data

    with cli.one_line_errors("export.py"):
        model_and_data = model_data.load_with_data(
            path,
            FLAGS.data,
            data_overrides=config_flags.get_override_values(FLAGS["data"]),
            preprocessing=FLAGS.preprocessing,
            batch_size=FLAGS.batch_size,
            seed=FLAGS.seed,
        )
        output_dir = FLAGS.output_dir or _default_output_dir(path, kind)
        written, rows = model_data.export_and_check(
            model_and_data,
            output_dir,
            formats=FLAGS.formats,
            image_bytes_signature=FLAGS.image_bytes_signature,
            calibration_examples=FLAGS.calibration_examples,
            parity_examples=FLAGS.parity_examples,
            batch_size=FLAGS.batch_size,
        )
    print(export.parity_table(rows))
    source = model_and_data.data_config.source
    print(f"Exported {', '.join(written)} to {output_dir}; parity on '{source}' validation images.")
    broken = [row.format for row in rows if not row.ok]
    if broken:
        sys.exit(f"export.py: parity broken for {', '.join(broken)} (see the table).")


if __name__ == "__main__":
    app.run(main)
