"""Channel pruning in train.py: prune a dense run, fine-tune, resume, reload by checkpoint."""

import os

import pytest
import tensorflow as tf

import trainer
from architectures.cost import model_cost
from compression import channel_graph, quantization
from configs import recipes
from deploy import loading
from deploy.fileio import read_json
from deploy.workdir import Workdir
from layers.wrappers import unwrap
from trainer import channel_pruning as trainer_channel_pruning
from trainer.callbacks import read_metrics_csv


def _config(model="mobilenet_v2_035", **channel_pruning):
    config = recipes.digits(model, image_size=32, epochs=1)
    config.train.steps_per_epoch = 2
    config.train.batch_size = 16
    config.train.eval_steps = 2
    config.train.verbose = 0
    config.export.formats = "keras"
    config.channel_pruning.update(channel_pruning)
    return config


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"target_macs": 0.0}, "channel_pruning.target_macs"),
        ({"target_macs": 0.5, "target_params": 0.5}, "channel_pruning.target_params"),
        ({"target_macs": 0.5, "steps": 0}, "channel_pruning.steps"),
        ({"target_macs": 0.5, "min_fraction": 1.0}, "channel_pruning.min_fraction"),
        ({"target_macs": 0.5, "steps": 2, "fine_tune_steps": 0}, "channel_pruning.fine_tune_steps"),
        ({"target_macs": 0.5, "importance": "random"}, "channel_pruning.importance"),
    ],
)
def test_bad_config_names_the_key(overrides, key, tmp_path):
    with pytest.raises(ValueError, match=f"config.{key}="):
        trainer.run(_config(**overrides), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")  # refused before anything was written


def test_gradual_pruning_resumes_after_the_last_saved_step(tmp_path, monkeypatch):
    """steps=3: prune, fine-tune, save, twice, then the last step. A run stopped in the second
    fine-tuning resumes from the saved first step (nothing before it is redone) and reaches the
    budget along the same geometric schedule."""
    run_dir = str(tmp_path / "run")
    run = Workdir(run_dir)
    # MobileNet v1: the fewest groups to plan over three times (this test is about the steps).
    config = _config("mobilenet_v1_025", target_macs=0.5, steps=3, fine_tune_steps=2)
    real_fine_tune = trainer_channel_pruning.fine_tune
    tuned = []

    def stopped_in_second(model, *args):
        tuned.append(model_cost(model).total_macs)
        if len(tuned) == 2:
            raise RuntimeError("stopped")
        return real_fine_tune(model, *args)

    monkeypatch.setattr(trainer_channel_pruning, "fine_tune", stopped_in_second)
    with pytest.raises(RuntimeError, match="stopped"):
        trainer.run(config, run_dir)
    assert os.path.isfile(run.channel_pruning_step(1))
    assert not os.path.exists(run.channel_pruning_step(2)) and not os.path.exists(run.architecture)
    step_1 = loading.load_keras_file(run.channel_pruning_step(1))
    step_1_macs = model_cost(step_1).total_macs
    assert step_1_macs == tuned[0]

    tuned.clear()
    monkeypatch.setattr(
        trainer_channel_pruning,
        "fine_tune",
        lambda model, *args: (
            tuned.append(model_cost(model).total_macs) or real_fine_tune(model, *args)
        ),
    )
    metrics = trainer.run(config, run_dir)
    record = metrics["channel_pruning"]
    dense = record["dense_macs"]
    assert len(tuned) == 1  # only step 2 was fine-tuned: step 1 came from its file
    assert 0.5 ** (2 / 3) * dense * 0.9 < tuned[0] <= 0.5 ** (2 / 3) * dense < step_1_macs
    assert step_1_macs <= 0.5 ** (1 / 3) * dense
    assert record["pruned_macs"] <= 0.5 * dense and record["steps"] == 3
    assert record["fine_tune_steps"] == 2
    assert not os.path.exists(run.channel_pruning_steps)  # only served to reach the model
    # The channel counts are those of the stored model, against the dense model's.
    thin_groups = {
        g.name: g.channels
        for g in channel_graph.channel_groups(loading.load_keras_file(run.architecture))
    }
    assert {name: kept for name, (kept, _) in record["channels"].items()} == thin_groups
    assert all(kept <= full for kept, full in record["channels"].values())
    assert metrics["final"]["steps"] == 2


@pytest.mark.slow
def test_prune_fine_tune_resume_and_reload(tmp_path):
    dense_dir, pruned_dir = str(tmp_path / "dense"), str(tmp_path / "pruned")
    dense_metrics = trainer.run(_config(), dense_dir)
    config = _config(target_macs=0.5)
    config.init_checkpoint = dense_dir
    config.distill.teacher = dense_dir  # the compressed-model recipe (docs/recipes.md)
    metrics = trainer.run(config, pruned_dir)
    record = metrics["channel_pruning"]
    rows = read_metrics_csv(Workdir(pruned_dir).metrics_csv)
    assert rows[-1]["distill_kl"] > 0  # the thin student learned from its dense parent
    assert record["pruned_macs"] <= 0.5 * record["dense_macs"]
    assert record["dense_top1"] == dense_metrics["final"]["val_top1"]
    assert record == read_json(Workdir(pruned_dir).metrics_json)["channel_pruning"]
    assert any(kept < full for kept, full in record["channels"].values())
    exported = loading.load_model(pruned_dir).keras_model
    assert model_cost(exported).total_macs == record["pruned_macs"]

    # Resume with one more epoch: the stored architecture is reused, nothing is pruned again.
    config.train.epochs = 2
    resumed = trainer.run(config, pruned_dir)
    assert resumed["final"]["steps"] == 4
    assert resumed["channel_pruning"]["pruned_macs"] == record["pruned_macs"]
    # A checkpoint alone rebuilds the pruned model, not the registry's dense one.
    prefix = tf.train.latest_checkpoint(Workdir(pruned_dir).checkpoints)
    assert model_cost(loading.load_source_model(prefix)).total_macs == record["pruned_macs"]

    # Quantization-aware training from the pruned run fine-tunes the thinner model (the
    # workdir's architecture.keras), not the registry's dense one, and its model.keras reloads.
    qat_config = _config()
    qat_config.init_checkpoint = pruned_dir
    qat_config.quantization.aware = True
    trainer.run(qat_config, str(tmp_path / "qat"))
    qat = loading.load_model(str(tmp_path / "qat")).keras_model
    assert quantization.has_wrappers(qat)
    pruned = loading.load_model(pruned_dir).keras_model

    def kernels(model):
        return {
            (unwrap(layer).name, name): tuple(weight.shape)
            for layer in model.layers
            for weight in layer.weights
            if (name := weight.name.split("/")[-1]) in ("kernel:0", "depthwise_kernel:0")
        }

    assert kernels(qat) == kernels(pruned)
