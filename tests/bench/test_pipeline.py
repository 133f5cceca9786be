"""``benchmark.py pipeline``: the fixture it writes and the command line, in tiny settings."""

import json

import numpy as np
import pytest

from architectures.registry import Preprocessing
from bench.pipeline_fixture import make_fixture
from configs.common import get_base_config
from tests.bench.cli import run_benchmark
from trainer import data


def run_pipeline(*args):
    return run_benchmark("pipeline", *args)


def test_fixture_holds_the_same_images_as_folder_and_tfrecords(tmp_path):
    sources = make_fixture(str(tmp_path), images=12, size=24, classes=3)
    assert make_fixture(str(tmp_path), images=12, size=24, classes=3) == sources  # reused
    config = get_base_config().data
    config.update(num_classes=3, augment="none")
    val = {}
    for source in sources:
        config.source = source
        bundle = data.build_datasets(
            config, image_size=8, preprocessing=Preprocessing(), batch_size=64
        )
        assert (bundle.train_examples, bundle.val_examples, bundle.num_classes) == (12, 3, 3)
        val[source] = next(iter(bundle.val))
    (x0, y0), (x1, y1) = val.values()
    np.testing.assert_array_equal(y0.numpy(), y1.numpy())
    np.testing.assert_allclose(x0.numpy(), x1.numpy(), atol=1e-6)


@pytest.mark.slow  # two short subprocesses
def test_cli_measures_folder_and_tfrecord_and_rejects_bad_sources(tmp_path):
    result = run_pipeline(
        f"--make_fixture={tmp_path}",
        "--fixture_images=8",
        "--fixture_size=24",
        "--fixture_classes=2",
        "--image_size=32",
        "--batch_size=4",
        "--batches=2",
        "--repeats=2",
        "--warmup=1",
        "--model=mobilenet_v1_025",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["source"].split(":")[0] for r in rows] == ["folder", "tfrecord"]
    for row in rows:
        assert row["img_s"] > 0 and row["img_s_min"] <= row["img_s"] <= row["img_s_max"]
        assert (row["augment"], row["cached"], row["corrupt_skipped"]) == ("light", False, 0)
        assert row["pipeline_over_model"] == pytest.approx(row["img_s"] / row["model_train_img_s"])

    bad = run_pipeline("--data.source=imagenet", "--batches=1")
    assert bad.returncode != 0
    assert "Unknown data source 'imagenet'" in bad.stderr and "Traceback" not in bad.stderr
