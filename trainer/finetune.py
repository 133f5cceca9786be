"""Fine-tuning: a frozen-backbone phase, then the whole network at per-layer learning rates.

A pretrained backbone under a fresh classifier trains in two phases (``configs/finetune.py``):

1. ``config.train.freeze_backbone_epochs`` epochs train the head alone: every other layer is
   frozen (``trainable = False``), which in tf_keras also runs its batch norms in inference mode,
   so neither the backbone's weights nor its moving statistics move while the random head's large
   gradients would otherwise wreck them.
2. The remaining epochs train every layer. The backbone's learning rate is the head's times
   ``config.optim.backbone_lr_scale``, and with ``config.optim.layer_decay`` a further
   ``layer_decay**d`` for a layer ``d`` layers below the head (the layers nearest the input,
   whose generic features need the least change, move the least).

The head is ``CLASSIFIER_LAYERS``, the layers a warm start leaves fresh (``trainer/checkpoints.py``).
The phase is a function of the global step alone (``segments``), so a resumed run, whatever step
it was killed at, continues in the right phase with the right trainable set. Changing the
trainable set needs a recompile (Keras traces the train step over the trainable variables once).

Per-variable learning rates scale each variable's *update*, not its gradient: the optimizer
computes its usual step and the variable moves ``scale`` times as far. For every optimizer here
(SGD with momentum, RMSprop, Adam, AdamW) the update is proportional to the learning rate, so this
is exactly training that variable at ``scale × learning rate``, where scaling the gradient would
be undone by Adam's and RMSprop's normalisation. AdamW's decoupled decay (``lr · wd · w``) is
scaled with it, as the optimizer applies it at the same learning rate.
"""

from __future__ import annotations

import dataclasses
import os
import types

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import logging  # noqa: E402

from configs import validation  # noqa: E402
from layers.wrappers import unwrap  # noqa: E402
from trainer.checkpoints import CLASSIFIER_LAYERS  # noqa: E402

HEAD_LAYERS = CLASSIFIER_LAYERS


def validate(config) -> None:
    """Checks the fine-tuning keys (``ValueError`` naming the key, before any work)."""
    validation.check_range(
        config, "train.freeze_backbone_epochs", low=0, high=config.train.epochs, integer=True
    )
    validation.check_range(config, "optim.backbone_lr_scale", low=0.0)
    validation.check_range(
        config, "optim.layer_decay", low=0.0, high=1.0, low_open=True, optional=True
    )


def is_head(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` (or the layer a pruning wrapper holds) belongs to the head."""
    return unwrap(layer).name in HEAD_LAYERS


def set_backbone_trainable(model: keras.Model, trainable: bool) -> bool:
    """Freezes (``False``) or unfreezes every layer with weights outside the head.

    Returns:
      Whether anything changed (then a compiled model needs ``compile`` again).
    """
    changed = False
    for layer in model.layers:
        if layer.weights and not is_head(layer) and layer.trainable != trainable:
            layer.trainable = trainable
            changed = True
    return changed


@dataclasses.dataclass(frozen=True)
class Segment:
    """One ``model.fit`` call: epochs ``[initial_epoch, end_epoch)`` of ``steps`` steps each."""

    initial_epoch: int
    end_epoch: int
    steps: int
    frozen: bool


def segments(step: int, *, steps_per_epoch: int, epochs: int, freeze_epochs: int) -> list[Segment]:
    """The ``fit`` calls that take a run from global ``step`` to the end, phase by phase.

    The rest of an epoch a kill interrupted comes first (so the step count matches an unbroken
    run), then the frozen epochs left, then the unfrozen ones; each ``Segment`` is frozen exactly
    when its epochs are below ``freeze_epochs``.
    """
    epoch, offset = divmod(step, steps_per_epoch)
    planned = []
    if offset and epoch < epochs:
        planned.append(Segment(epoch, epoch + 1, steps_per_epoch - offset, epoch < freeze_epochs))
        epoch += 1
    for end, frozen in ((min(freeze_epochs, epochs), True), (epochs, False)):
        if epoch < end:
            planned.append(Segment(epoch, end, steps_per_epoch, frozen))
            epoch = end
    return planned


def enter_phase(model: keras.Model, segment: Segment, compile_model) -> None:
    """Sets the trainable set for ``segment``, recompiling (``compile_model()``) if it changed."""
    if not set_backbone_trainable(model, not segment.frozen):
        return
    compile_model()
    first, last = segment.initial_epoch + 1, segment.end_epoch
    epochs = f"epoch {first}" if first == last else f"epochs {first}-{last}"
    if segment.frozen:
        logging.info(
            "Fine-tuning phase 1 (%s): training %s only; the backbone is frozen and its batch "
            "norms run in inference mode.",
            epochs,
            ", ".join(HEAD_LAYERS),
        )
    else:
        logging.info("Fine-tuning phase 2 (%s): training the whole network.", epochs)


def _is_batch_norm(layer) -> bool:
    return isinstance(unwrap(layer), keras.layers.BatchNormalization)


def layer_depths(model: keras.Model) -> dict[str, int]:
    """Depth below the head of every layer with weights, by (unwrapped) layer name.

    The head is depth 0; the other layers with weights count from the top, a batch norm
    sharing the depth of the layer it normalises (its input's), so a conv and its BN train
    at one rate. In a model of ``N`` such layers (batch norms aside) the stem is at depth ``N``.
    """
    weighted = [layer for layer in model.layers if layer.weights]
    compute = [layer for layer in weighted if not is_head(layer) and not _is_batch_norm(layer)]
    depths = {unwrap(layer).name: 0 for layer in weighted if is_head(layer)}
    depths.update({unwrap(layer).name: len(compute) - i for i, layer in enumerate(compute)})
    for layer in weighted:
        if _is_batch_norm(layer) and not is_head(layer):
            source = unwrap(layer.inbound_nodes[-1].inbound_layers)
            # Every BN in these families follows a conv; one that did not would sit at depth 1.
            depths[unwrap(layer).name] = depths.get(source.name, 1)
    return depths


def learning_rate_scales(model: keras.Model, optim_config) -> list[tuple[tf.Variable, float]]:
    """``(variable, learning-rate multiplier)`` for each trainable backbone variable.

    A backbone layer at depth ``d`` (``layer_depths``) gets ``backbone_lr_scale *
    layer_decay**d``; the head keeps the learning rate itself. Empty when both are off (1.0, or
    None for the decay).
    """
    backbone = float(optim_config.backbone_lr_scale)
    decay = float(optim_config.layer_decay or 1.0)
    if backbone == 1.0 and decay == 1.0:
        return []
    depths = layer_depths(model)
    return [
        (variable, backbone * decay ** depths[unwrap(layer).name])
        for layer in model.layers
        if layer.weights and not is_head(layer)
        for variable in layer.trainable_weights
    ]


class _ScaledUpdates:
    """Optimizer mixin: each variable's update (and decoupled decay) times its scale.

    ``_lr_scales`` (set by ``with_learning_rate_scales``) maps the optimizer's variable key to
    the scale; other variables keep 1.
    """

    def _apply_weight_decay(self, variables):
        """Decay moves into ``_update_step``, per variable and scaled with the rest."""

    def _update_step(self, gradient, variable):
        if getattr(variable, "_unique_id", None) is None:  # model.save(): Keras updates nothing
            return super()._update_step(gradient, variable)
        scale = self._lr_scales.get(self._var_key(variable), 1.0)
        before = tf.identity(variable) if scale != 1.0 else None
        if self.weight_decay is not None and self._use_weight_decay(variable):
            rate = tf.cast(self.learning_rate, variable.dtype)
            variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype) * rate)
        super()._update_step(gradient, variable)
        if before is not None:
            variable.assign(before + scale * (variable - before))


# The same class names: an optimizer config saved with a model reloads as the plain optimizer.
_SCALED = {
    base: type(base.__name__, (_ScaledUpdates, base), {})
    for base in (
        keras.optimizers.SGD,
        keras.optimizers.RMSprop,
        keras.optimizers.Adam,
        keras.optimizers.AdamW,
    )
}


def with_learning_rate_scales(optimizer, model: keras.Model, optim_config):
    """``optimizer`` itself when no scale is set, else an optimizer of the same settings that
    trains each backbone variable at its ``learning_rate_scales``. Call it before the optimizer
    is built (and before ``exclude_from_weight_decay``)."""
    scales = learning_rate_scales(model, optim_config)
    if not scales:
        return optimizer
    scaled = _SCALED[type(optimizer)].from_config(optimizer.get_config())
    # A read-only mapping: tf.Module tracking would turn a dict into a checkpointed object.
    scaled._lr_scales = types.MappingProxyType(
        {scaled._var_key(variable): scale for variable, scale in scales}
    )
    top, stem = max(scale for _, scale in scales), min(scale for _, scale in scales)
    logging.info(
        "Learning rates: the head's x1, the backbone's x%s (optim.backbone_lr_scale=%s, "
        "optim.layer_decay=%s).",
        f"{top:.3g}" if top == stem else f"{top:.3g} (top) to x{stem:.3g} (stem)",
        optim_config.backbone_lr_scale,
        optim_config.layer_decay,
    )
    return scaled
