"""Mixup and CutMix on training batches, with soft (one-hot, mixed) labels.

``soft_label_batches(dataset, config.data, ...)`` one-hot encodes the labels of a batched
``(images, int labels)`` dataset and, when ``mixup_alpha`` or ``cutmix_alpha`` is set, mixes
each batch with itself reversed (timm's ``Mixup`` in ``batch`` mode):

- with probability ``1 - mix_prob`` the batch is left alone;
- otherwise CutMix with probability ``mix_switch_prob`` when both alphas are set (the only one
  that is set otherwise), with ``lam ~ Beta(alpha, alpha)``;
- mixup: ``x = lam * x + (1 - lam) * x_rev``;
- CutMix: a box of side ``sqrt(1 - lam)`` times the image's, centred uniformly and clipped at
  the borders, is pasted from ``x_rev``; ``lam`` becomes the share of the image left uncovered;
- labels: ``y = lam * y + (1 - lam) * y_rev``, so each row still sums to one.

Label smoothing composes: the loss smooths these soft labels as it smooths one-hot ones
(``y * (1 - eps) + eps / K``). Randomness is stateless, one seed per batch, from the run's seed.
"""

from __future__ import annotations

import tensorflow as tf

from configs import validation
from trainer.data.pipeline import seed_stream

# Folded into the per-batch seeds so they differ from the per-example augmentation seeds.
_MIX_STREAM = 0x6D6978


def one_hot(num_classes: int):
    """A ``(images, int labels [B]) -> (images, float32 one-hot [B, K])`` map function."""

    def encode(images, labels):
        return images, tf.one_hot(labels, num_classes)

    return encode


def is_enabled(data_config) -> bool:
    """Whether mixup or CutMix is on (an alpha is > 0 and ``mix_prob`` > 0)."""
    return (data_config.mixup_alpha > 0 or data_config.cutmix_alpha > 0) and (
        data_config.mix_prob > 0
    )


def validate(data_config) -> None:
    """Alphas >= 0; probabilities in [0, 1]."""
    for key in ("mixup_alpha", "cutmix_alpha"):
        validation.check_range(data_config, key, low=0.0, prefix="data.")
    for key in ("mix_prob", "mix_switch_prob"):
        validation.check_range(data_config, key, low=0.0, high=1.0, prefix="data.")


def _beta(seed: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """One draw of ``Beta(alpha, alpha)`` as a ratio of two Gamma draws."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma([], seeds[0], alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha)
    return a / tf.maximum(a + b, 1e-12)


def cutmix_box(height, width, lam: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A float32 ``[H, W, 1]`` mask, 1 inside the pasted box (timm's ``rand_bbox``)."""
    cut = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(height, tf.float32) * cut, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * cut, tf.int32)
    centre = tf.random.stateless_uniform(
        [2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32
    ) % tf.stack([height, width])
    y0 = tf.clip_by_value(centre[0] - cut_h // 2, 0, height)
    y1 = tf.clip_by_value(centre[0] + cut_h // 2, 0, height)
    x0 = tf.clip_by_value(centre[1] - cut_w // 2, 0, width)
    x1 = tf.clip_by_value(centre[1] + cut_w // 2, 0, width)
    rows = tf.range(height)
    cols = tf.range(width)
    inside_rows = tf.cast((rows >= y0) & (rows < y1), tf.float32)
    inside_cols = tf.cast((cols >= x0) & (cols < x1), tf.float32)
    return (inside_rows[:, None] * inside_cols[None, :])[:, :, None]


def mix_batch(
    images: tf.Tensor,
    labels: tf.Tensor,
    seed: tf.Tensor,
    *,
    mixup_alpha: float,
    cutmix_alpha: float,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixes one batch with its reverse (see the module docstring).

    Args:
      images: float32 ``[B, H, W, C]``.
      labels: float32 ``[B, K]`` one-hot (or already soft) labels.
      seed: int ``[2]`` stateless seed of this batch.
      mixup_alpha, cutmix_alpha: Beta parameters; 0 turns that kind off.
      mix_prob: probability of mixing the batch at all.
      switch_prob: probability of CutMix when both kinds are on.

    Returns:
      ``(images, labels)`` of the same shapes and dtypes.
    """
    apply_seed, switch_seed, lam_seed, box_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4)
    )
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], switch_seed) < switch_prob
    else:
        use_cutmix = tf.constant(cutmix_alpha > 0)
    alpha = tf.where(use_cutmix, float(cutmix_alpha), float(mixup_alpha))
    lam = _beta(lam_seed, alpha)
    partner_images, partner_labels = tf.reverse(images, [0]), tf.reverse(labels, [0])

    def cutmix():
        shape = tf.shape(images)
        mask = cutmix_box(shape[1], shape[2], lam, box_seed)
        kept = 1.0 - tf.reduce_mean(mask)
        return images * (1.0 - mask) + partner_images * mask, kept

    def mixup():
        return lam * images + (1.0 - lam) * partner_images, lam

    mixed, kept = tf.cond(use_cutmix, cutmix, mixup)
    mixed_labels = kept * labels + (1.0 - kept) * partner_labels
    apply = tf.random.stateless_uniform([], apply_seed) < mix_prob
    return tf.cond(apply, lambda: (mixed, mixed_labels), lambda: (images, labels))


def soft_label_batches(
    dataset: tf.data.Dataset, data_config, *, num_classes: int, seed: int
) -> tf.data.Dataset:
    """One-hot labels, then mixup/CutMix per ``config.data`` (a no-op while both are off).

    Args:
      dataset: batched ``(float32 [B, H, W, C], int labels [B])``.
      data_config: ``config.data``.
      num_classes: ``K``.
      seed: the run's seed (batch ``i`` gets a seed derived from it and ``i``).
    """
    validate(data_config)
    dataset = dataset.map(one_hot(num_classes))
    if not is_enabled(data_config):
        return dataset
    kwargs = dict(
        mixup_alpha=float(data_config.mixup_alpha),
        cutmix_alpha=float(data_config.cutmix_alpha),
        mix_prob=float(data_config.mix_prob),
        switch_prob=float(data_config.mix_switch_prob),
    )
    return (
        tf.data.Dataset.zip((dataset, seed_stream(seed)))
        .map(
            lambda batch, s: mix_batch(
                *batch, tf.random.experimental.stateless_fold_in(s, _MIX_STREAM), **kwargs
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
