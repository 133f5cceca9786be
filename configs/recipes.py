"""Shared starting points for the recipe files (this module is not a recipe itself).

``digits`` (the bundled digits, small models from scratch), ``imagenet`` (ImageNet-1k defaults)
and the families' ImageNet optimisers; each recipe file in ``configs/`` is a few lines on top,
with the paper text its settings come from in its docstring.
"""

from configs.common import get_base_config

# ImageNet-style data: pass the real location with --config.data.source=folder:<dir> or
# --config.data.source=tfrecord:<glob> (trainer/data/sources.py lists the sources).
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
    # The training images are at hand to calibrate int8: ship the phone-ready file too.
    config.export.formats = "keras,saved_model,tflite,tflite_int8"
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
    return config


def mobilenet_imagenet(model_name: str):
    """The MobileNet v1/v2 and FD-MobileNet optimiser on top of the ImageNet defaults."""
    config = imagenet(model_name, epochs=200, batch_size=96)
    config.optim.name = "rmsprop"
    config.optim.rho = 0.9
    config.optim.momentum = 0.9
    config.optim.epsilon = 1.0
    config.optim.learning_rate = 0.045
    config.optim.base_batch_size = 96
    config.optim.schedule = "exponential"
    config.optim.decay_rate = 0.98
    config.optim.decay_epochs = 1.0
    config.optim.weight_decay = 4e-5
    config.optim.depthwise_weight_decay = 0.0
    return config


def resnet_imagenet(model_name: str):
    """The ResNet/ResNeXt optimiser on top of the ImageNet defaults."""
    config = imagenet(model_name, epochs=90, batch_size=256)
    config.optim.name = "sgd"
    config.optim.momentum = 0.9
    config.optim.nesterov = True
    config.optim.learning_rate = 0.1
    config.optim.base_batch_size = 256
    config.optim.warmup_epochs = 5.0
    config.optim.schedule = "step"
    config.optim.decay_rate = 0.1
    config.optim.decay_epochs = 30.0
    config.optim.weight_decay = 1e-4
    config.optim.depthwise_weight_decay = 1e-4
    return config


def shufflenet_imagenet(model_name: str):
    """The ShuffleNet v1/v2 optimiser on top of the ImageNet defaults."""
    config = imagenet(model_name, epochs=240, batch_size=1024)
    config.data.min_crop_area = 0.25
    config.optim.name = "sgd"
    config.optim.momentum = 0.9
    config.optim.learning_rate = 0.5
    config.optim.base_batch_size = 1024
    config.optim.schedule = "linear"
    config.optim.min_learning_rate = 0.0
    config.optim.weight_decay = 4e-5
    config.optim.depthwise_weight_decay = 4e-5
    return config


def shapes_segmentation(model_name: str, *, image_size: int = 64, epochs: int = 36):
    """The synthetic shapes scenes (no download): a DeepLab model from scratch on a CPU.

    9,600 seeded scenes (9,360 to train, 240 to validate) at ``image_size``; ``epochs`` of 200
    steps at batch 16 (7,200 steps), Adam with warmup and cosine decay; the best epoch by
    validation mIoU is kept, and every format (int8 TFLite included) is exported. The scenes
    are drawn at the training size with shapes of varied scales already, so augmentation is a
    random left-right flip only (scale 1): fresh scenes teach more per step than rescaled and
    cropped copies of fewer ones (docs/segmentation.md, "Measured"). Real data wants the random
    scale back (``data.min_scale``, ``data.max_scale``).
    """
    config = get_base_config()
    config.task = "segmentation"
    config.model.name = model_name
    config.model.bn_momentum = 0.9  # a few thousand steps: fast BN statistics (see digits)
    config.data.source = "shapes"
    config.data.image_size = image_size
    config.data.synthetic_examples = 9600
    config.data.val_fraction = 0.025
    config.data.min_scale = 1.0
    config.data.max_scale = 1.0
    config.train.epochs = epochs
    config.train.steps_per_epoch = 200
    config.train.batch_size = 16
    config.train.best_metric = "val_miou"
    config.optim.name = "adam"
    config.optim.learning_rate = 4e-3
    config.optim.base_batch_size = 16
    config.optim.schedule = "cosine"
    config.optim.warmup_epochs = 1.0
    config.export.formats = "keras,saved_model,tflite,tflite_int8"
    return config
