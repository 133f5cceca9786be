"""Issue 10, parts 2-4: bad runs, data and files end in one line and damage nothing.

Each case asserts the exit status and the one line the user sees (through ``deploy.cli``'s
``one_line_errors``, the one mechanism every entry point uses, or the entry point itself in a
subprocess) and that no file of the run directory changed (hashes before and after). One tiny
finished run (MobileNet v1 0.25, digits, 32 px, 2 steps) is shared by the module; every case
that would write into it works on a copy.
"""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

import trainer
from configs.common import get_base_config
from deploy import cli, fileio, loading, workdir
from tests.model_checks import REPO_ROOT
from tests.trainer.data.test_pipeline import PREP, class_colour, data_config, write_shards
from trainer import callbacks, checkpoints, data, model_data

ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
TINY = {
    "model.name": "mobilenet_v1_025",
    "data.image_size": 32,
    "train.epochs": 1,
    "train.batch_size": 8,
    "train.steps_per_epoch": 2,
    "train.eval_steps": 1,
    "train.verbose": 0,
    "optim.warmup_epochs": 0.0,
    "export.formats": "keras",
}


def tiny_config(**overrides):
    config = get_base_config()
    for key, value in {**TINY, **overrides}.items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    return config


def snapshot(path) -> dict:
    """relative path -> sha256 of every file under ``path`` (or of ``path`` itself)."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return {".": hashlib.sha256(f.read()).hexdigest()}
    digests = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                digests[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def one_line_exit(capsys, fn, program="train.py", extra=()):
    """Runs ``fn`` as the entry points do; returns (exit status, the stderr lines)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info, cli.one_line_errors(program, extra):
        fn()
    lines = capsys.readouterr().err.strip().splitlines()
    return exit_info.value.code, lines


def assert_one_line(code, lines, *fragments, status=1):
    assert code == status
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("finished"))
    trainer.run(tiny_config(), run_dir)
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(finished, copy)
    return copy


# -- part 2: the run directory is never damaged -------------------------------------------------


def test_a_finished_run_carries_its_marker_and_classes(finished):
    assert os.path.isfile(workdir.Workdir(finished).marker)
    names = [str(i) for i in range(10)]
    assert workdir.Workdir(finished).read_class_names() == names
    assert workdir.read_class_names(workdir.Workdir(finished).export) == names
    assert loading.load_model(finished).class_names == names


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"model.name": "mobilenet_v1_050"}, "config.model.name='mobilenet_v1_025', but this "
                                             "config has 'mobilenet_v1_050'"),
        ({"data.image_size": 40}, "config.data.image_size=32, but this config has 40"),
        ({"data.source": "synthetic", "data.num_classes": 3},
         "config.data.num_classes=10, but this config has 3"),
    ],
)  # fmt: skip
def test_an_incompatible_config_is_refused_before_any_write(finished, capsys, overrides, fragment):
    before = snapshot(finished)
    code, lines = one_line_exit(capsys, lambda: trainer.run(tiny_config(**overrides), finished))
    assert_one_line(code, lines, f"--workdir='{finished}'", fragment)
    assert snapshot(finished) == before


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"mine": 1}')
    (tmp_path / "metrics.csv").write_text("a,b\n1,2\n")
    before = snapshot(tmp_path)
    code, lines = one_line_exit(capsys, lambda: trainer.run(tiny_config(), str(tmp_path)))
    assert_one_line(code, lines, "is not empty and is not a lightnets run (no LIGHTNETS_RUN")
    assert snapshot(tmp_path) == before


def test_a_run_written_before_the_marker_still_resumes(run_copy):
    os.remove(workdir.Workdir(run_copy).marker)
    resolved = workdir.Workdir(run_copy).read_config()
    assert workdir.check_trainable(run_copy, resolved, [str(i) for i in range(10)]) is True
    with pytest.raises(ValueError, match=r"holds a run with classes"):
        workdir.check_trainable(run_copy, resolved, [f"c{i}" for i in range(10)])


def test_a_workdir_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    code, lines = one_line_exit(capsys, lambda: trainer.run(tiny_config(), str(path)))
    assert_one_line(code, lines, f"--workdir='{path}' is a file, not a directory")
    assert path.read_text() == "keep me"


def test_a_read_only_place_is_refused(tmp_path, capsys, monkeypatch):
    # Tests may run as root, where chmod cannot make a directory read-only: the check's answer
    # is what changes.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    target = tmp_path / "new"
    code, lines = one_line_exit(capsys, lambda: trainer.run(tiny_config(), str(target)))
    assert_one_line(code, lines, f"--workdir='{target}' is not writable", "read-only")
    assert not target.exists()


@pytest.mark.parametrize("code_", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_or_read_only_filesystem_ends_in_one_line(run_copy, capsys, monkeypatch, code_):
    before = snapshot(run_copy)

    def fail(path, text):
        raise OSError(code_, os.strerror(code_), path)

    from trainer import loop

    monkeypatch.setattr(loop, "write_atomic", fail)
    more = tiny_config(**{"train.epochs": 2})
    code, lines = one_line_exit(capsys, lambda: trainer.run(more, run_copy))
    problem = {errno.ENOSPC: "no space left", errno.EROFS: "read-only file system"}[code_]
    assert_one_line(code, lines, f"Cannot write to the run directory '{run_copy}': {problem}")
    assert snapshot(run_copy) == before


@pytest.mark.slow
def test_train_py_refuses_another_model_and_ctrl_c_checkpoints(finished, tmp_path):
    """The entry point itself: a mismatched --config.model.name in one line, nothing changed;
    SIGINT mid-run saves a checkpoint, prints how to resume and exits 130."""
    before = snapshot(finished)
    flags = [f"--config.{k}={v}" for k, v in TINY.items() if k != "model.name"]
    mismatch = subprocess.Popen(
        [sys.executable, "train.py", f"--workdir={finished}", "--config.model.name=resnet50",
         *flags], cwd=REPO_ROOT, env=ENV, text=True, stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    _, err = mismatch.communicate(timeout=600)
    lines = [line for line in err.splitlines() if line.startswith("train.py:")]
    assert mismatch.returncode == 1 and "Traceback" not in err, err
    assert lines == [
        f"train.py: --workdir='{finished}' holds a run with config.model.name="
        f"'mobilenet_v1_025', but this config has 'resnet50'; resume it with the same value "
        f"or pass another --workdir."
    ]
    assert snapshot(finished) == before

    interrupted = str(tmp_path / "interrupted")
    long_run = [f"--config.{k}={v}" for k, v in TINY.items() if k != "train.steps_per_epoch"]
    process = subprocess.Popen(
        [sys.executable, "train.py", f"--workdir={interrupted}", *long_run,
         "--config.train.steps_per_epoch=100000", "--config.train.checkpoint_every_steps=5"],
        cwd=REPO_ROOT, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    state = os.path.join(interrupted, "checkpoints", "checkpoint")
    deadline = time.time() + 600
    while not os.path.exists(state) and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("train.py:")]
    assert len(lines) == 1 and "Resume with: python train.py" in lines[0], err
    assert f"--workdir={interrupted}" in lines[0]
    step = int(lines[0].split("step ")[1].split(" ")[0])
    latest = tf.train.latest_checkpoint(os.path.join(interrupted, "checkpoints"))
    assert tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE") == step >= 5


# -- part 3: data and training that make no sense ----------------------------------------------


def test_tfrecord_labels_outside_the_classes_fail_naming_the_label_and_the_fix(tmp_path, capsys):
    write_shards(tmp_path, "train", [[0, 1]])  # written 1-based: labels 1 and 2
    write_shards(tmp_path, "validation", [[1]])
    config = data_config(source=f"tfrecord:{tmp_path}/*", num_classes=2, augment="none")
    bundle = data.build_datasets(config, image_size=8, preprocessing=PREP, batch_size=2)

    def read():
        with bundle.reporting_failures():
            next(iter(bundle.train))

    code, lines = one_line_exit(capsys, read)
    assert_one_line(code, lines, "TFRecord label 2 of ", "outside [0, 2)", "label_offset=1")


def test_a_tfrecord_without_the_expected_keys_names_the_keys_found(tmp_path, capsys):
    with tf.io.TFRecordWriter(str(tmp_path / "train-0")) as writer:
        feature = {"jpeg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}
        writer.write(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    shutil.copy(tmp_path / "train-0", tmp_path / "validation-0")
    config = data_config(source=f"tfrecord:{tmp_path}/*", num_classes=2)
    code, lines = one_line_exit(
        capsys, lambda: data.build_datasets(config, image_size=8, preprocessing=PREP, batch_size=2)
    )
    assert_one_line(code, lines, "lacks the feature key(s) ['image/encoded', 'image/class/label']",
                    "it has ['jpeg']")  # fmt: skip


def image_folder(root, classes, corrupt=False):
    for split in ("train", "val"):
        for label, name in enumerate(classes):
            directory = root / split / name
            directory.mkdir(parents=True)
            Image.fromarray(class_colour(label % 2)).save(directory / "a.png")
    if corrupt:
        for split in ("train", "val"):
            (root / split / classes[0] / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


def test_a_folder_with_one_class_is_refused(tmp_path, capsys):
    folder = image_folder(tmp_path, ["cat"])
    config = data_config(source=f"folder:{folder}")
    code, lines = one_line_exit(
        capsys, lambda: data.build_datasets(config, image_size=8, preprocessing=PREP, batch_size=2)
    )
    assert_one_line(code, lines, "has 1 class folder(s) (cat); a classifier needs at least two")


def test_evaluation_maps_classes_by_name_or_refuses_other_names(tmp_path):
    folder = image_folder(tmp_path, ["ant", "bee"])
    config = data_config(source=f"folder:{folder}", augment="none")
    bundle = data.build_datasets(config, image_size=8, preprocessing=PREP, batch_size=2)
    assert list(np.concatenate([y for _, y in bundle.val.as_numpy_iterator()])) == [0, 1]
    same = model_data.match_class_names("m", ["ant", "bee"], bundle, "f")
    assert same is bundle
    swapped = model_data.match_class_names("m", ["bee", "ant"], bundle, "f")
    assert swapped.class_names == ["bee", "ant"]
    assert list(np.concatenate([y for _, y in swapped.val.as_numpy_iterator()])) == [1, 0]
    with pytest.raises(ValueError, match=r"trained on classes \['ant', 'cow'\].*not in the model: "
                                         r"\['bee'\]; not in the data: \['cow'\]"):  # fmt: skip
        model_data.match_class_names("m", ["ant", "cow"], bundle, "f")


def test_the_evaluation_json_says_which_classes_it_used(finished):
    loaded = model_data.load_with_data(finished, get_base_config().data, batch_size=64)
    result, _ = model_data.evaluate(loaded, latency_batch_size=2, latency_iterations=1)
    assert result["class_names"] == [str(i) for i in range(10)]
    assert list(result["per_class"]) == result["class_names"]


def tiny_model(classes=3):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(inputs))


def guard_on(model):
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    guard = callbacks.NanGuard()
    guard.set_model(model)
    return guard


def test_an_exploding_loss_trips_the_guard_before_nan():
    guard = guard_on(tiny_model(classes=10))
    guard.on_train_batch_end(0, {"loss": 2.0})  # limit: 100 * max(2.0, ln 10)
    assert guard.limit == pytest.approx(100 * np.log(10))
    guard.on_train_batch_end(1, {"loss": 200.0})
    assert not guard.tripped
    guard.on_train_batch_end(2, {"loss": 6e8})
    assert guard.tripped and "exploded to 6e+08" in guard.reason


@pytest.mark.slow
def test_a_diverging_run_stops_exports_nothing_and_exits_non_zero(tmp_path, capsys):
    config = tiny_config(**{"optim.learning_rate": 1e6, "train.steps_per_epoch": 6})
    config.optim.schedule = "constant"
    code, lines = one_line_exit(
        capsys, lambda: trainer.run(config, str(tmp_path)), extra=(trainer.NonFiniteLossError,)
    )
    # Adam at 1e6 sends the loss to ~1e7 at once, still finite: the explosion rule stops it.
    assert_one_line(code, lines, "Training stopped in epoch 1", "the loss exploded to",
                    "nothing was exported")  # fmt: skip
    assert not os.path.exists(workdir.Workdir(str(tmp_path)).export)
    assert not os.path.exists(workdir.Workdir(str(tmp_path)).metrics_json)


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    model = tiny_model()
    guard = guard_on(model)
    state = checkpoints.CheckpointState(model, model.optimizer, str(tmp_path))
    saver = callbacks.CheckpointSaver(state, every_steps=1, guard=guard)
    saver.set_params({"steps": 10})
    model.optimizer.iterations.assign(1)
    saver.on_train_batch_end(0)
    good = tf.train.latest_checkpoint(str(tmp_path))
    assert good is not None
    kernel = model.layers[-1].kernel
    kernel.assign(tf.fill(kernel.shape, np.nan))
    model.optimizer.iterations.assign(2)
    saver.on_train_batch_end(1)
    saver.on_epoch_end(0)
    assert guard.tripped and "weights became NaN" in guard.reason
    assert tf.train.latest_checkpoint(str(tmp_path)) == good


def test_metrics_json_never_holds_nan(tmp_path):
    path = str(tmp_path / "m.json")
    fileio.write_json(path, {"loss": float("nan"), "rows": [float("inf"), 1.5]})
    with open(path) as f:
        text = f.read()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "rows": [None, 1.5]}


def test_corrupt_images_are_summarised_and_fail_mode_is_one_line(tmp_path, capsys):
    folder = image_folder(tmp_path, ["ant", "bee"], corrupt=True)
    skip = data.build_datasets(
        data_config(source=f"folder:{folder}", augment="none"),
        image_size=8,
        preprocessing=PREP,
        batch_size=2,
    )
    assert skip.corrupt_summary() is None
    list(skip.val)
    broken = str(folder / "val" / "ant" / "broken.jpg")
    assert skip.corrupt_summary() == (
        f"Skipped 1 corrupt or unreadable image(s): {broken} (all listed in metrics.json "
        f"'corrupt_images')."
    )
    fail = data.build_datasets(
        data_config(source=f"folder:{folder}", augment="none", on_corrupt="fail"),
        image_size=8,
        preprocessing=PREP,
        batch_size=2,
    )

    def read():
        with fail.reporting_failures():
            list(fail.val)

    code, lines = one_line_exit(capsys, read)
    assert_one_line(code, lines, f"Corrupt or unreadable image: {broken}", "on_corrupt=skip")


# -- part 4: one clear line instead of a traceback --------------------------------------------


def test_flag_errors_are_one_line_before_tensorflow_loads():
    """An unknown --config key and a missing --config file, through train.py itself."""
    runs = [
        subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO_ROOT, env=ENV, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for args in (["--config.train.epochz=3"], ["--config=configs/nope.py"])
    ]  # fmt: skip
    (key_err, file_err) = [p.communicate(timeout=300)[1] for p in runs]
    assert [p.returncode for p in runs] == [1, 1]
    assert key_err.strip().splitlines() == [
        "train.py: Unknown config key config.train.epochz: did you mean 'epochs'? The valid "
        "keys are those of configs/common.py."
    ]
    assert file_err.strip().splitlines() == [
        "train.py: --config=configs/nope.py: no such file; pass a recipe such as "
        "configs/digits.py (see configs/)."
    ]


def test_a_truncated_keras_file_is_named(finished, tmp_path, capsys):
    path = str(tmp_path / "model.keras")
    with open(workdir.Workdir(finished).exported("keras"), "rb") as f:
        head = f.read(2000)
    with open(path, "wb") as f:
        f.write(head)
    before = snapshot(path)
    code, lines = one_line_exit(capsys, lambda: loading.load_keras_file(path), "evaluate.py")
    assert_one_line(code, lines, f"evaluate.py: truncated or not a Keras file: {path}")
    assert snapshot(path) == before


def test_tfds_without_the_package_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if absent
    config = data_config(source="tfds:mnist")
    code, lines = one_line_exit(
        capsys, lambda: data.build_datasets(config, image_size=8, preprocessing=PREP, batch_size=4)
    )
    assert_one_line(code, lines, "'tfds:mnist' needs TensorFlow Datasets: pip install "
                                 "tensorflow-datasets")  # fmt: skip


def test_a_truncated_config_json_is_named(run_copy, capsys):
    config_json = workdir.Workdir(run_copy).config_json
    with open(config_json) as f:
        text = f.read()
    with open(config_json, "w") as f:
        f.write(text[: len(text) // 2])
    before = snapshot(run_copy)
    code, lines = one_line_exit(capsys, lambda: trainer.run(tiny_config(), run_copy))
    assert_one_line(code, lines, f"{config_json} is truncated or not JSON")
    code, lines = one_line_exit(
        capsys,
        lambda: model_data.load_with_data(run_copy, get_base_config().data),
        "evaluate.py",
    )
    assert_one_line(code, lines, f"{config_json} is truncated or not JSON")
    assert snapshot(run_copy) == before


def test_a_keras_file_with_an_unregistered_lightnets_layer_names_it(tmp_path, capsys, monkeypatch):
    from tf_keras.src.saving import object_registration

    import layers

    inputs = keras.Input((8, 8, 3))
    path = str(tmp_path / "g.keras")
    keras.Model(inputs, layers.GroupConv2D(6, 3, groups=3)(inputs)).save(path)
    with zipfile.ZipFile(path) as archive:
        assert "lightnets>GroupConv2D" in archive.read("config.json").decode()
    # As in a process that never imported `layers`.
    monkeypatch.delitem(object_registration._GLOBAL_CUSTOM_OBJECTS, "lightnets>GroupConv2D")
    code, lines = one_line_exit(capsys, lambda: loading.load_keras_file(path), "evaluate.py")
    assert_one_line(code, lines, f"{path} uses layer(s) lightnets>GroupConv2D", "`import layers`")
