"""Fine-tune an ImageNet-pretrained model on your own folder of images.

    python train.py --config=configs/finetune.py --config.data.source=folder:/data/flowers
    python train.py --config=configs/finetune.py:mobilenet_v3_large_100 \\
        --config.data.source=folder:/data/flowers

The argument after the colon (or ``--config.model.name``) is the model (default
``mobilenet_v2_100``); ``model.pretrained`` is ``"imagenet"`` (the weights keras.applications
publishes, for the variants that have them) or the path of a weight file. The folder holds
``train/<class>/`` and ``val/<class>/`` images. The new classifier first trains alone for
``train.freeze_backbone_epochs`` epochs (backbone frozen, its batch norms in inference mode), then
the whole network trains with the backbone at ``optim.backbone_lr_scale`` times the learning rate
(``trainer/finetune.py``); the learning rate follows one cosine over both phases.

``--config.pruning.final_sparsity=0.5 --config.init_checkpoint=<a finished fine-tuning run>``
prunes a fine-tuned model: the warm start keeps the backbone, a fresh classifier trains in the
frozen phase again, and pruning runs in the first half of the second phase, leaving the rest to
recover.
"""

from configs.common import get_base_config

DEFAULT_MODEL = "mobilenet_v2_100"


def get_config(model_name: str = DEFAULT_MODEL):
    config = get_base_config()
    config.model.name = model_name
    config.model.pretrained = "imagenet"
    # Your images: one sub-folder per class under train/ and val/.
    config.data.source = "folder:/data/images"
    # A few thousand images need milder crops than ImageNet's 8 %.
    config.data.min_crop_area = 0.25
    config.train.epochs = 10
    config.train.freeze_backbone_epochs = 2
    config.train.batch_size = 32
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.optim.base_batch_size = 32
    config.optim.schedule = "cosine"
    # The pretrained features move at a tenth of the new classifier's rate.
    config.optim.backbone_lr_scale = 0.1
    # Inert until --config.pruning.final_sparsity is set: pruning starts when the backbone
    # unfreezes (a frozen layer could not recover from its mask) and ends half-way through the
    # second phase, plus half an epoch so the window is never empty (references: the
    # command-line epochs move it).
    epochs = config.train.get_ref("epochs").to_float()
    frozen = config.train.get_ref("freeze_backbone_epochs").to_float()
    config.pruning.begin_epoch = frozen
    config.pruning.end_epoch = (frozen + epochs) * 0.5 + 0.5
    config.pruning.frequency = 10  # steps: the window holds mask updates on a few hundred images
    # The training images calibrate int8: ship the phone-ready file too.
    config.export.formats = "keras,saved_model,tflite,tflite_int8"
    return config
