"""Shared starting points for the recipe files (this module is not a recipe itself)."""

from configs.common import get_base_config

# ImageNet-style data: pass the real location with --config.data.source=folder:<dir> or
# --config.data.source=tfrecord:<glob> (see DESIGN.md's data sources).
IMAGENET_SOURCE = "folder:/data/imagenet"


def digits(model_name: str, *, image_size: int = 32, epochs: int = 30, **model_kwargs):
    """The bundled digits at a small size: Adam with a short warmup and cosine decay.

    Small models trained from scratch on ~1,400 images: no weight decay and light augmentation
    (the data pipeline's ``auto`` picks it for small images).
    """
    config = get_base_config()
    config.model.name = model_name
    config.model.kwargs.update(model_kwargs)
    # A few hundred steps in all: faster BN statistics, or evaluation lags training badly.
    config.model.bn_momentum = 0.9
    config.data.source = "digits"
    config.data.image_size = image_size
    config.train.epochs = epochs
    config.train.batch_size = 64
    config.optim.name = "adam"
    config.optim.learning_rate = 5e-3
    config.optim.base_batch_size = 64
    config.optim.schedule = "cosine"
    config.optim.warmup_epochs = 1.0
    # Inert until --config.pruning.final_sparsity is set. Pruning runs from 1/30 to 40 % of
    # training (epochs 1-12 of 30), so the network recovers while the cosine learning rate is
    # still high: ending at 90 % cost MobileNet v2 4 points of top-1 at 75 % sparsity, this window
    # 0.55 points (docs/pruning.md). References, so --config.train.epochs moves the window too.
    epochs_ref = config.train.get_ref("epochs").to_float()
    config.pruning.begin_epoch = epochs_ref / 30
    config.pruning.end_epoch = epochs_ref * 0.4
    config.pruning.frequency = 11  # twice an epoch (22 steps of 64 digits)
    return config


def imagenet(model_name: str, *, epochs: int, batch_size: int):
    """ImageNet-1k defaults shared by every family; recipes set the optimiser on top."""
    config = get_base_config()
    config.model.name = model_name
    config.data.source = IMAGENET_SOURCE
    config.data.augment = "imagenet"
    config.train.epochs = epochs
    config.train.batch_size = batch_size
    config.train.checkpoint_every_steps = 2000
    config.train.verbose = 2  # one line per epoch: progress bars flood cluster logs
    config.export.formats = "keras,saved_model,tflite"
    return config
