"""MobileNet v3 Large 1.0 on ImageNet, as the paper trains it (Howard et al., 2019, §6.1.1).

"We train our models using synchronous training setup on 4x4 TPU Pod using standard tensorflow
RMSPropOptimizer with 0.9 momentum. We use the initial learning rate of 0.1, with batch size 4096
(128 images per chip), and learning rate decay rate of 0.01 every 3 epochs. We use dropout of
0.8, and l2 weight decay 1e-5 and the same image preprocessing as Inception. Finally we use
exponential moving average with decay 0.9999. All our convolutional layers use
batch-normalization layers with average decay of 0.99."

Read here as: RMSprop (rho 0.9, momentum 0.9), learning rate 0.1 at batch 4096 (scaled linearly
with --config.train.batch_size), multiplied by 0.99 every 3 epochs; dropout 0.8 is TF's keep
probability, i.e. rate 0.2; L2 1e-5 on every kernel; BN momentum 0.99. Not stated in the paper:
RMSprop's epsilon (1e-3, the TPU reference trainers' default) and the epoch count (600, as the
torchvision reference recipe trains MobileNet v3). The EMA is ``config.train.ema_decay`` (with
tf.train.ExponentialMovingAverage's warm-up of the decay, docs/recipes.md), exported and evaluated in place of the raw weights. Other
variants: --config.model.name=mobilenet_v3_small_100 etc. Set the data with
--config.data.source=folder:<dir> or tfrecord:<glob>.
"""

from configs import recipes


def get_config():
    config = recipes.imagenet("mobilenet_v3_large_100", epochs=600, batch_size=4096)
    config.model.dropout = 0.2
    config.model.bn_momentum = 0.99
    config.optim.name = "rmsprop"
    config.optim.rho = 0.9
    config.optim.momentum = 0.9
    config.optim.epsilon = 1e-3
    config.optim.learning_rate = 0.1
    config.optim.base_batch_size = 4096
    config.optim.schedule = "step"
    config.optim.decay_rate = 0.99
    config.optim.decay_epochs = 3.0
    config.optim.weight_decay = 1e-5
    config.optim.depthwise_weight_decay = 1e-5
    config.train.ema_decay = 0.9999
    return config
