"""The full set of config keys, with defaults; every recipe starts from ``get_base_config()``.

Keys here are a contract: tools and scripts set them with ``--config.<key>=<value>``. Add keys,
never rename them. A key whose default is None is a typed placeholder, so it can still be set
from the command line.
"""

import ml_collections
from ml_collections import config_dict


def get_base_config() -> ml_collections.ConfigDict:
    """All keys the trainer reads, with defaults suitable for the digits quickstart."""
    config = ml_collections.ConfigDict()
    # classification | segmentation (per-pixel labels: a segmentation model and data source)
    config.task = "classification"

    config.model = ml_collections.ConfigDict()
    config.model.name = "mobilenet_v1_050"
    # None: fresh weights; "imagenet": the weights keras.applications publishes (from the Keras
    # cache, else downloaded into it); or the path of a weight file (architectures/pretrained.py)
    config.model.pretrained = config_dict.placeholder(str)
    config.model.input_size = config_dict.placeholder(int)  # None: the variant's default
    config.model.dropout = config_dict.placeholder(float)  # None: the builder's default
    # The families' own builder arguments ("knobs"), settable from the command line, e.g.
    # --config.model.kwargs.alpha=0.75. None leaves the variant's value; a knob the model's
    # family does not have is refused, naming the family's knobs.
    config.model.kwargs = ml_collections.ConfigDict()
    config.model.kwargs.alpha = config_dict.placeholder(float)  # MobileNets: width multiplier
    # MobileNet v1/v2: "symmetric" (XNNPACK's layout) | "same" (keras.applications' weights)
    config.model.kwargs.stride2_padding = config_dict.placeholder(str)
    config.model.kwargs.minimalistic = config_dict.placeholder(bool)  # MobileNet v3
    config.model.kwargs.groups = config_dict.placeholder(int)  # ShuffleNet v1
    config.model.kwargs.scale = config_dict.placeholder(float)  # ShuffleNet v1
    config.model.kwargs.stem_channels = config_dict.placeholder(int)  # ShuffleNet v1
    config.model.kwargs.width = config_dict.placeholder(float)  # ShuffleNet v2
    config.model.kwargs.cardinality = config_dict.placeholder(int)  # ResNet / ResNeXt
    config.model.kwargs.base_width = config_dict.placeholder(int)  # ResNet / ResNeXt
    # MobileNet v2, Xception, DeepLab: 8 | 16 (atrous last stages) | 32 (classifiers only)
    config.model.kwargs.output_stride = config_dict.placeholder(int)
    # None: the builder's. Short runs on small data want ~0.9: with 0.99-0.999 the moving
    # statistics lag the weights and evaluation collapses.
    config.model.bn_momentum = config_dict.placeholder(float)

    config.data = ml_collections.ConfigDict()
    # digits | synthetic | folder:<dir> | tfrecord:<glob> | tfds:<name>; segmentation: shapes |
    # segfolder:<dir> (trainer/data/segmentation.py)
    config.data.source = "digits"
    config.data.data_dir = ""  # tfds data_dir
    config.data.image_size = config_dict.placeholder(int)  # None: the model's input size
    config.data.num_classes = config_dict.placeholder(int)  # synthetic only; else from data
    config.data.synthetic_examples = 1024  # synthetic and shapes
    config.data.min_scale = 0.5  # segmentation: random scale range of the joint augmentation
    config.data.max_scale = 2.0
    config.data.val_fraction = 0.2  # digits: seeded train/val split
    config.data.augment = "auto"  # auto | imagenet | light | none | randaugment
    config.data.min_crop_area = 0.08  # imagenet augment: crop area in [min, 1]; 0.25 small models
    config.data.label_offset = 0  # tfrecord: subtracted from labels; 1 for 1-based ImageNet shards
    config.data.on_corrupt = "skip"  # skip | fail
    config.data.shuffle_buffer = 10_000
    config.data.cache = "auto"  # auto | memory | none
    config.data.num_parallel_calls = -1  # -1: tf.data.AUTOTUNE
    # Training recipes (docs/recipes.md), all off by default. RandAugment (augment=randaugment):
    # n ops per image at magnitude m in [0, 10] (timm's rand-m9-n2 by default).
    config.data.randaugment_n = 2
    config.data.randaugment_m = 9.0
    config.data.random_erasing = 0.0  # probability of erasing a random box of each image
    # Mixup / CutMix on each batch (trainer/data/mixing.py): off while both alphas are 0.
    config.data.mixup_alpha = 0.0
    config.data.cutmix_alpha = 0.0
    config.data.mix_prob = 1.0  # probability that a batch is mixed at all
    config.data.mix_switch_prob = 0.5  # with both alphas > 0: probability of CutMix over mixup

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 10
    config.train.batch_size = 64
    config.train.steps_per_epoch = config_dict.placeholder(int)  # None: a full pass
    config.train.eval_steps = config_dict.placeholder(int)  # None: the whole validation set
    config.train.label_smoothing = 0.0
    config.train.checkpoint_every_steps = 500
    config.train.keep_checkpoints = 3
    # What best/ keeps the best epoch by; val_ema_top1 etc. (with ema_decay) rank the average.
    config.train.best_metric = "val_top1"
    # Exponential moving average of the weights (trainer/ema.py): None or 0 is off; e.g. 0.9999.
    config.train.ema_decay = config_dict.placeholder(float)
    config.train.export_ema = True  # with ema_decay: export (and finally evaluate) the average
    # Keras progress: None = a bar on a terminal, one line per epoch otherwise (logs, nohup, CI).
    config.train.verbose = config_dict.placeholder(int)
    # Fine-tuning (trainer/finetune.py): epochs that train only the classifier, the backbone
    # frozen with its batch norms in inference mode, before the whole network trains. 0: none.
    config.train.freeze_backbone_epochs = 0

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adam"  # sgd | rmsprop | adam | adamw
    config.optim.learning_rate = 1e-3  # at base_batch_size; scaled linearly with batch size
    config.optim.base_batch_size = 64
    config.optim.momentum = 0.9
    config.optim.nesterov = False
    config.optim.rho = 0.9  # RMSprop decay
    config.optim.epsilon = 1e-7
    config.optim.weight_decay = 0.0
    config.optim.depthwise_weight_decay = 0.0
    config.optim.schedule = "cosine"  # constant | cosine | step | exponential | linear
    config.optim.warmup_epochs = 0.0
    config.optim.decay_rate = 0.1  # step and exponential
    config.optim.decay_epochs = 30.0  # step and exponential
    config.optim.min_learning_rate = 0.0
    config.optim.clipnorm = config_dict.placeholder(float)
    # Fine-tuning (trainer/finetune.py): the backbone's learning rate is the classifier's times
    # backbone_lr_scale, and a layer at depth d below the classifier gets a further
    # layer_decay**d (None or 1.0: no layer-wise decay).
    config.optim.backbone_lr_scale = 1.0
    config.optim.layer_decay = config_dict.placeholder(float)

    config.runtime = ml_collections.ConfigDict()
    config.runtime.strategy = "auto"  # auto | one_device | mirrored | multi_worker_mirrored | tpu
    config.runtime.precision = "float32"  # float32 | float16 | bfloat16
    config.runtime.jit_compile = False
    config.runtime.seed = 0
    config.runtime.deterministic = False
    config.runtime.tpu = ""

    config.pruning = ml_collections.ConfigDict()
    config.pruning.final_sparsity = 0.0  # pruning is on when this is > 0
    config.pruning.schedule = "polynomial_decay"  # polynomial_decay | constant
    config.pruning.initial_sparsity = 0.0
    config.pruning.begin_step = 0
    config.pruning.end_step = config_dict.placeholder(int)  # None: end_epoch or end of training
    config.pruning.begin_epoch = config_dict.placeholder(float)
    config.pruning.end_epoch = config_dict.placeholder(float)
    config.pruning.frequency = 100
    config.pruning.m_by_n = ""  # e.g. "2:4" for structured sparsity
    config.pruning.policy = (
        ""  # "" (the prune_<kind> keys) | xnnpack_latency (1x1 convs, XNNPACK-sparse)
    )
    config.pruning.prune_pointwise = True
    config.pruning.prune_grouped = True
    config.pruning.prune_dense = True
    config.pruning.prune_conv = True  # full k x k convolutions
    config.pruning.prune_depthwise = False
    config.pruning.skip_first_conv = True
    config.pruning.skip_classifier = False
    # A finished dense run (workdir or .keras) to compare export sizes with; "" uses
    # init_checkpoint when that is a dense run's workdir.
    config.pruning.dense_reference = ""

    # Structured channel pruning (compression/channel_pruning.py, docs/compression.md): on when
    # a target is set. The model (warm-started from init_checkpoint) is made thinner before
    # training, which then fine-tunes it; the pruned architecture is kept in the workdir.
    config.channel_pruning = ml_collections.ConfigDict()
    config.channel_pruning.target_macs = config_dict.placeholder(float)  # fraction kept
    config.channel_pruning.target_params = config_dict.placeholder(float)  # or this fraction
    config.channel_pruning.importance = "l1"  # l1 | bn_gamma | taylor
    config.channel_pruning.round_to = 8  # kept channel counts are multiples of this
    config.channel_pruning.min_fraction = 0.0  # no group keeps less of its channels than this
    # Gradual pruning: steps along a geometric schedule of budgets before training, each but
    # the last followed by fine_tune_steps training steps (None: five epochs).
    config.channel_pruning.steps = 1
    config.channel_pruning.fine_tune_steps = config_dict.placeholder(int)
    # Groups kept whole: comma-separated names (compression.channel_groups) or fnmatch patterns;
    # "stem,*_project" keeps MobileNet v2's residual trunks (docs/compression.md: faster).
    config.channel_pruning.skip = ""

    # Quantization-aware training (compression/quantization.py, docs/deploy.md): fine-tune
    # init_checkpoint (a float run; a pruned one keeps its sparsity) with tfmot's 8-bit scheme.
    config.quantization = ml_collections.ConfigDict()
    config.quantization.aware = False
    config.quantization.int8_io = True  # the int8 file takes and returns int8 (else float32)

    config.export = ml_collections.ConfigDict()
    # At the end of training; the float TFLite file is what a phone runs (docs/deploy.md).
    config.export.formats = "keras,saved_model,tflite"

    # Knowledge distillation (trainer/distill.py): off while teacher is "". The teacher is a
    # workdir, a .keras file or a registered model name (with its ImageNet weights).
    config.distill = ml_collections.ConfigDict()
    config.distill.teacher = ""
    config.distill.alpha = 0.9  # weight of the soft-target term; 1 - alpha on the labels
    config.distill.temperature = 4.0

    config.init_checkpoint = ""  # warm start from another run's workdir or checkpoint
    return config
