"""``tfds:<name>`` end to end: a TensorFlow Datasets dataset prepared locally (a builder over
generated images), read by name from ``data_dir``, trained on and evaluated like any run."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

CLASSES = ("circle", "square", "triangle")
TRAIN, VAL = 48, 12


class TinyPatterns(tfds.core.GeneratorBasedBuilder):
    """Three classes of 24×24 RGB images whose mean brightness is their class: learnable fast."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(24, 24, 3)),
                    "label": tfds.features.ClassLabel(names=list(CLASSES)),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated here: nothing to download
        return {
            "train": self._generate_examples(TRAIN, 0),
            "validation": self._generate_examples(VAL, 1),
        }

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            label = i % len(CLASSES)
            image = rng.integers(0, 60, (24, 24, 3)) + 90 * label
            yield i, {"image": image.astype(np.uint8), "label": label}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tfds"))
    TinyPatterns(data_dir=root).download_and_prepare()
    return root


def test_a_locally_prepared_dataset_trains_and_evaluates(data_dir, tmp_path):
    import trainer
    from configs import recipes
    from trainer import model_data

    config = recipes.digits("mobilenet_v1_025", image_size=32, epochs=2)
    config.data.source = "tfds:tiny_patterns"
    config.data.data_dir = data_dir
    config.train.batch_size, config.train.verbose = 16, 0
    config.export.formats = "keras"
    workdir = str(tmp_path / "run")
    metrics = trainer.run(config, workdir)
    assert metrics["num_classes"] == len(CLASSES)
    assert metrics["final"]["steps"] == 2 * (TRAIN // 16)

    # Evaluated from the workdir alone: its config.json names the tfds source and data_dir.
    loaded = model_data.load_with_data(workdir, config.data)
    assert loaded.data.class_names == list(CLASSES)
    result, confusion = model_data.evaluate(loaded, latency_iterations=1)
    assert result["examples"] == VAL == confusion.sum()
    assert result["data"] == "tfds:tiny_patterns"
    assert result["top1"] == pytest.approx(metrics["final"]["val_top1"], abs=1e-6)
