"""Magnitude pruning with tfmot: which weights to prune, the schedule, the callbacks and the report.

The trainer calls, in order::

    pruning.validate(config.pruning)                       # bad keys fail before any work
    model = pruning.apply(model, config.pruning, steps_per_epoch=..., total_steps=...)
    model.fit(..., callbacks=[*pruning.callbacks(config.pruning, log_dir), ...])
    stripped = pruning.strip(model)                        # plain layers, zeroed weights
    report = deploy.export.pruning_report(stripped, dense_reference)  # metrics.json["pruning"]

Layers are chosen by *type* (Keras' conv/dense layers and the lightnets layers through their
``get_prunable_weights``), each prunable weight gets a kind (``pointwise``, ``grouped``,
``dense``, ``conv``, ``depthwise``) and the ``prune_<kind>`` keys decide. The pruning step lives in
the wrappers' ``pruning_step`` variables, so a ``tf.train.Checkpoint`` of the model carries it and
a resumed run continues the schedule with its masks.

Order matters for checkpoints: a *dense* checkpoint (``init_checkpoint``) is restored into the
model before ``apply`` (which keeps the weights: the wrappers wrap the same layer objects); a
*pruned* run's own checkpoint is restored after ``apply``, since its object graph has wrappers.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from absl import logging

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

# The wrapper class is not in tfmot's public API, but recognising wrapped layers needs it.
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa: E402
    PruneLowMagnitude as _Wrapper,
)

from architectures.common import CLASSIFIER_NAME  # noqa: E402
from compression.channel_pruning import weight_name as _short_name  # noqa: E402
from configs import validation  # noqa: E402

_sparsity = tfmot.sparsity.keras

KINDS = ("pointwise", "grouped", "dense", "conv", "depthwise")
SCHEDULES = ("polynomial_decay", "constant")
POLICIES = ("", "xnnpack_latency")
_KEYS = frozenset(
    {
        "final_sparsity",
        "schedule",
        "initial_sparsity",
        "begin_step",
        "end_step",
        "begin_epoch",
        "end_epoch",
        "frequency",
        "m_by_n",
        "policy",
        "dense_reference",
        "skip_first_conv",
        "skip_classifier",
        *(f"prune_{kind}" for kind in KINDS),
    }
)
# Set on a pruned layer (bypassing Keras' attribute tracking): the names of its pruned weights,
# so that a stripped model still knows what was pruned when its sparsity is reported.
_PRUNED_MARK = "_lightnets_pruned_weights"


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def _get(cfg, key, default=None):
    return validation.get(cfg, key, default)


def is_enabled(pruning_config) -> bool:
    """Pruning is on when ``final_sparsity > 0`` or an ``m_by_n`` pattern is set."""
    return float(_get(pruning_config, "final_sparsity", 0.0) or 0.0) > 0 or bool(
        _get(pruning_config, "m_by_n", "")
    )


def parse_m_by_n(text: str) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)`` (2 zeros in every 4 consecutive input-channel weights); ``""`` -> None.

    Raises:
      ValueError: not ``"M:N"`` with integers ``0 < M < N``.
    """
    if not text:
        return None
    parts = str(text).split(":")
    try:
        zeros, block = (int(p) for p in parts)
    except ValueError:
        zeros, block = 0, 0
    validation.require(
        len(parts) == 2 and 0 < zeros < block,
        "pruning.m_by_n",
        text,
        "is not a structured pattern; use 'M:N' with integers 0 < M < N, e.g. '2:4' (or '' for "
        "unstructured pruning)",
    )
    return zeros, block


def validate(pruning_config) -> None:
    """Checks every ``config.pruning`` key; cheap, so the trainer calls it before any work.

    Raises:
      ValueError: naming the bad key, its value and what is accepted.
    """
    cfg, prefix = pruning_config, "pruning."
    validation.check_keys(cfg, _KEYS, prefix)
    final = validation.check_range(
        cfg, "final_sparsity", low=0.0, high=1.0, high_open=True, prefix=prefix
    )
    initial = validation.check_range(
        cfg, "initial_sparsity", low=0.0, high=1.0, high_open=True, prefix=prefix
    )
    validation.require(
        not (final > 0 and initial > final),
        "initial_sparsity",
        initial,
        f"is above final_sparsity={final}; the schedule only increases sparsity",
        prefix,
    )
    validation.check_choice(cfg, "schedule", SCHEDULES, prefix)
    validation.require(
        _get(cfg, "policy", "") in POLICIES,
        "policy",
        _get(cfg, "policy"),
        "must be '' (the prune_<kind> keys decide) or 'xnnpack_latency' (tfmot's "
        "PruneForLatencyOnXNNPack: 1x1 convs only)",
        prefix,
    )
    validation.check_range(cfg, "begin_step", low=0, integer=True, prefix=prefix)
    validation.check_range(cfg, "frequency", low=1, integer=True, prefix=prefix)
    begin_step, end_step = _get(cfg, "begin_step"), _get(cfg, "end_step")
    validation.require(
        end_step is None or (validation.is_int(end_step) and end_step > begin_step),
        "end_step",
        end_step,
        f"must be an integer above begin_step={begin_step} (or None: end_epoch or the end of "
        "training)",
        prefix,
    )
    for key in ("begin_epoch", "end_epoch"):
        validation.check_range(cfg, key, low=0.0, optional=True, prefix=prefix)
    begin_epoch, end_epoch = _get(cfg, "begin_epoch"), _get(cfg, "end_epoch")
    validation.require(
        begin_epoch is None or not begin_step,
        "begin_epoch",
        begin_epoch,
        f"and begin_step={begin_step} are both set; set only one of them",
        prefix,
    )
    validation.require(
        end_step is None or end_epoch is None,
        "end_epoch",
        end_epoch,
        f"and end_step={end_step} are both set; set only one of them",
        prefix,
    )
    validation.require(
        begin_epoch is None or end_epoch is None or end_epoch > begin_epoch,
        "end_epoch",
        end_epoch,
        f"must be above begin_epoch={begin_epoch}",
        prefix,
    )
    m_by_n = parse_m_by_n(_get(cfg, "m_by_n", ""))
    if m_by_n and final > 0:
        fixed = m_by_n[0] / m_by_n[1]
        validation.require(
            abs(final - fixed) <= 1e-6,
            "m_by_n",
            _get(cfg, "m_by_n"),
            f"fixes the sparsity at {fixed:g}, but final_sparsity={final}; set final_sparsity "
            f"to {fixed:g} or 0",
            prefix,
        )
    for key in ("skip_first_conv", "skip_classifier", *(f"prune_{k}" for k in KINDS)):
        validation.check_bool(cfg, key, prefix)


def schedule_steps(pruning_config, *, steps_per_epoch: int, total_steps: int) -> tuple[int, int]:
    """The pruning window ``(begin, end)`` in pruning steps (= training steps of this run).

    ``end`` is pulled back onto the mask-update grid ``begin + k·frequency``: tfmot only updates
    masks on that grid, so an ``end`` off it would stop short of ``final_sparsity``.

    Raises:
      ValueError: the window is empty, ends after training, or is shorter than one frequency.
    """
    cfg = pruning_config
    if _get(cfg, "begin_epoch") is not None:
        begin = int(round(_get(cfg, "begin_epoch") * steps_per_epoch))
    else:
        begin = int(_get(cfg, "begin_step"))
    if _get(cfg, "end_step") is not None:
        end = int(_get(cfg, "end_step"))
    elif _get(cfg, "end_epoch") is not None:
        end = int(round(_get(cfg, "end_epoch") * steps_per_epoch))
    else:
        end = int(total_steps)
    if end > total_steps:
        raise ValueError(
            f"Pruning would end at step {end}, after training ends (step {total_steps}); "
            f"lower pruning.end_step/end_epoch or train longer."
        )
    frequency = int(_get(cfg, "frequency"))
    aligned = begin + (end - begin) // frequency * frequency
    if aligned <= begin:
        raise ValueError(
            f"The pruning window [{begin}, {end}] holds no mask update every "
            f"pruning.frequency={frequency} steps; lower frequency or widen the window "
            f"(begin_step/begin_epoch, end_step/end_epoch)."
        )
    return begin, aligned


def make_schedule(pruning_config, *, steps_per_epoch: int, total_steps: int):
    """The tfmot ``PruningSchedule`` for the config (``ConstantSparsity`` or ``PolynomialDecay``)."""
    cfg = pruning_config
    begin, end = schedule_steps(cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    frequency = int(_get(cfg, "frequency"))
    final = float(_get(cfg, "final_sparsity"))
    if _get(cfg, "schedule") == "constant":
        explicit_end = _get(cfg, "end_step") is not None or _get(cfg, "end_epoch") is not None
        return _sparsity.ConstantSparsity(
            final, begin_step=begin, end_step=end if explicit_end else -1, frequency=frequency
        )
    return _sparsity.PolynomialDecay(
        initial_sparsity=float(_get(cfg, "initial_sparsity")),
        final_sparsity=final,
        begin_step=begin,
        end_step=end,
        frequency=frequency,
    )


# ---------------------------------------------------------------------------------------------
# Which weights: by layer type
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Candidate:
    weight: tf.Variable
    kind: str


def _kind_of_kernel(layer, weight) -> str:
    """Kind of a kernel by its role in the layer: depthwise, pointwise, grouped, conv or dense."""
    if weight is getattr(layer, "depthwise_kernel", None):
        return "depthwise"
    if weight is getattr(layer, "pointwise_kernel", None):
        return "pointwise"
    if int(getattr(layer, "groups", 1) or 1) > 1:
        return "grouped"
    if weight.shape.rank == 2:
        return "dense"
    if weight.shape.rank == 4 and tuple(weight.shape[:2]) == (1, 1):
        return "pointwise"
    return "conv"


def prunable_candidates(layer) -> list[_Candidate]:
    """Every kernel of ``layer`` that pruning could act on, with its kind.

    Keras' ``Conv2D`` (grouped or not), ``DepthwiseConv2D``, ``SeparableConv2D`` and ``Dense``
    by type; any other layer through its tfmot ``get_prunable_weights`` (the lightnets layers),
    plus its ``depthwise_kernel`` if it has one, so ``prune_depthwise`` reaches it too.
    """
    if isinstance(layer, _Wrapper):
        layer = layer.layer
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [_Candidate(layer.depthwise_kernel, "depthwise")]
    if isinstance(layer, keras.layers.SeparableConv2D):
        return [
            _Candidate(layer.depthwise_kernel, "depthwise"),
            _Candidate(layer.pointwise_kernel, "pointwise"),
        ]
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return [_Candidate(layer.kernel, _kind_of_kernel(layer, layer.kernel))]
    # The class's method, not an instance override left by apply().
    own = getattr(type(layer), "get_prunable_weights", None)
    if own is None:
        return []
    weights = list(own(layer))
    depthwise = getattr(layer, "depthwise_kernel", None)
    if depthwise is not None and all(w is not depthwise for w in weights):
        weights.insert(0, depthwise)
    return [_Candidate(w, _kind_of_kernel(layer, w)) for w in weights]


@dataclasses.dataclass
class _Decision:
    layer: str
    kinds: tuple[str, ...]
    pruned: tuple[str, ...]  # weight short names
    reason: str


def _classifier_names(weighted: list) -> set[str]:
    """The classifier: the layer named ``classifier`` or, failing that, the last kernel layer."""
    names = {layer.name for layer in weighted}
    if CLASSIFIER_NAME in names:
        return {CLASSIFIER_NAME}
    return {weighted[-1].name} if weighted else set()


def plan(model: keras.Model, pruning_config) -> dict[str, list[_Candidate]]:
    """Decides, layer by layer, which kernels get pruned; logs every decision and its reason.

    Returns:
      layer name -> the candidates to prune (layers with none are absent).
    """
    cfg = pruning_config
    policy = _get(cfg, "policy", "") or ""
    latency_policy = _sparsity.PruneForLatencyOnXNNPack() if policy == "xnnpack_latency" else None
    weighted = [layer for layer in model.layers if prunable_candidates(layer)]
    first = weighted[0].name if weighted else None
    classifier = _classifier_names(weighted)
    selected: dict[str, list[_Candidate]] = {}
    decisions = []
    for layer in weighted:
        inner = layer.layer if isinstance(layer, _Wrapper) else layer
        candidates = prunable_candidates(inner)
        kinds = tuple(c.kind for c in candidates)
        reason = ""
        if _get(cfg, "skip_first_conv") and layer.name == first:
            reason = "first conv (skip_first_conv=True)"
        elif _get(cfg, "skip_classifier") and layer.name in classifier:
            reason = "classifier (skip_classifier=True)"
        elif latency_policy is not None and not latency_policy.allow_pruning(inner):
            reason = "policy xnnpack_latency prunes 1x1 Conv2D only"
        keep = [] if reason else [c for c in candidates if _get(cfg, f"prune_{c.kind}")]
        if not reason and not keep:
            reason = " and ".join(f"prune_{k}=False" for k in sorted(set(kinds)))
        if keep:
            selected[layer.name] = keep
        decisions.append(
            _Decision(layer.name, kinds, tuple(_short_name(c.weight) for c in keep), reason)
        )
    for d in decisions:
        if d.pruned:
            logging.info("pruning: prune %s %s (%s)", d.layer, list(d.pruned), "/".join(d.kinds))
        else:
            logging.info("pruning: keep  %s (%s): %s", d.layer, "/".join(d.kinds), d.reason)
    ignored = [
        layer.name
        for layer in model.layers
        if layer.trainable_weights and layer not in weighted and not isinstance(layer, keras.Model)
    ]
    if ignored:
        logging.info("pruning: no prunable kernels (BN and the like): %d layers", len(ignored))
    logging.info("pruning: %d of %d kernel layers pruned", len(selected), len(weighted))
    return selected


# ---------------------------------------------------------------------------------------------
# Apply, callbacks, strip
# ---------------------------------------------------------------------------------------------


def has_wrappers(model) -> bool:
    """Whether ``model`` holds tfmot pruning wrappers (``apply`` was called, ``strip`` not)."""
    return any(isinstance(layer, _Wrapper) for layer in model.layers)


def apply(
    model: keras.Model, pruning_config, *, steps_per_epoch: int, total_steps: int
) -> keras.Model:
    """Wraps the chosen layers of ``model`` with tfmot's ``PruneLowMagnitude``.

    Call it under the distribution strategy's scope (it creates mask variables), after restoring
    any dense warm-start weights: the wrappers wrap the same layer objects, so weights are kept.

    Args:
      model: a functional or sequential Keras model (built).
      pruning_config: ``config.pruning``.
      steps_per_epoch: training steps per epoch (turns ``begin_epoch``/``end_epoch`` into steps).
      total_steps: training steps of this run (the default end of the schedule).

    Returns:
      The wrapped model (uncompiled; compile it afterwards). ``model`` itself if pruning is off.

    Raises:
      ValueError: bad config, an already pruned model, a subclassed model, or a model the
        ``xnnpack_latency`` policy rejects.
    """
    validate(pruning_config)
    if not is_enabled(pruning_config):
        return model
    m_by_n = parse_m_by_n(_get(pruning_config, "m_by_n", ""))
    if m_by_n:
        schedule = _sparsity.ConstantSparsity(m_by_n[0] / m_by_n[1], begin_step=0, frequency=1)
        logging.info("pruning: %d:%d structured sparsity from the first step", *m_by_n)
    else:
        schedule = make_schedule(
            pruning_config, steps_per_epoch=steps_per_epoch, total_steps=total_steps
        )
        logging.info("pruning: schedule %s", schedule.get_config())
    return _wrap(model, pruning_config, schedule, m_by_n)


def rebuild(model: keras.Model, pruning_config) -> keras.Model:
    """Wraps ``model`` as ``apply`` would, with the same variables but no usable schedule.

    For reading a pruned run's checkpoint (warm starts, evaluation): its object graph has the
    wrappers, and the schedule is not part of it. Do not train the result; use ``apply``.
    """
    validate(pruning_config)
    if not is_enabled(pruning_config):
        return model
    m_by_n = parse_m_by_n(_get(pruning_config, "m_by_n", ""))
    schedule = _sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)
    return _wrap(model, pruning_config, schedule, m_by_n)


def _wrap(model, pruning_config, schedule, m_by_n) -> keras.Model:
    if has_wrappers(model):
        raise ValueError(f"Model '{model.name}' is already wrapped for pruning; apply() it once.")
    if not isinstance(model, keras.Model) or not (
        isinstance(model, keras.Sequential) or model._is_graph_network
    ):
        raise ValueError(
            f"Pruning needs a functional or Sequential model, got {type(model).__name__}."
        )
    if _get(pruning_config, "policy", "") == "xnnpack_latency":
        try:
            _sparsity.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(model)
        except ValueError as error:
            raise ValueError(
                f"pruning.policy='xnnpack_latency' rejects model '{model.name}': {error}. XNNPACK's "
                f"sparse path needs a ZeroPadding2D(1) + 'valid' 3x3/2 stem conv on the RGB "
                f"input, 3x3 depthwise convs ('same' at stride 1, ZeroPadding2D(1) + 'valid' at "
                f"stride 2), 1x1 Conv2Ds, BN, ReLU, Add, and a GlobalAveragePooling2D at the end."
            ) from None
    selected = plan(model, pruning_config)
    if not selected:
        raise ValueError(
            f"Pruning is on but no layer of '{model.name}' has weights of the enabled kinds; "
            f"check config.pruning.prune_<kind> and the skip keys."
        )

    def wrap(layer):
        candidates = selected.get(layer.name)
        if not candidates:
            return layer
        weights = [c.weight for c in candidates]

        def get_prunable_weights():
            return weights

        # The wrapper prunes exactly what the layer offers; offer only the chosen kernels.
        object.__setattr__(layer, "get_prunable_weights", get_prunable_weights)
        object.__setattr__(layer, _PRUNED_MARK, tuple(_short_name(w) for w in weights))
        return _Wrapper(layer, pruning_schedule=schedule, sparsity_m_by_n=m_by_n)

    # clone_model re-creates InputLayers only; every other layer (and weight) is shared.
    return keras.models.clone_model(model, clone_function=wrap)


class SparsityLog(keras.callbacks.Callback):
    """Logs the mean mask sparsity of the pruned layers and the pruning step after each epoch."""

    def on_epoch_end(self, epoch, logs=None):
        wrappers = [layer for layer in self.model.layers if isinstance(layer, _Wrapper)]
        masks = [mask for layer in wrappers for _, mask, _ in layer.pruning_vars]
        if not masks:
            return
        size = sum(int(np.prod(mask.shape)) for mask in masks)
        zeros = sum(float(tf.reduce_sum(1.0 - tf.cast(mask, tf.float32))) for mask in masks)
        step = int(wrappers[0].pruning_step.numpy())
        logging.info(
            "pruning: epoch %d, step %d, mask sparsity %.4f", epoch + 1, step, zeros / size
        )


def callbacks(pruning_config, log_dir: str | None) -> list[keras.callbacks.Callback]:
    """The callbacks a pruned model's ``fit`` needs; [] when pruning is off.

    ``UpdatePruningStep`` (the wrappers refuse to train without it), ``SparsityLog`` and, when
    TensorBoard is installed and ``log_dir`` given, tfmot's ``PruningSummaries`` under
    ``log_dir/pruning`` (per-mask sparsity and thresholds each epoch).
    """
    if not is_enabled(pruning_config):
        return []
    result: list[keras.callbacks.Callback] = [_sparsity.UpdatePruningStep(), SparsityLog()]
    if log_dir and importlib.util.find_spec("tensorboard") is not None:
        result.append(
            _sparsity.PruningSummaries(
                log_dir=os.path.join(log_dir, "pruning"), write_graph=False, profile_batch=0
            )
        )
    elif log_dir:
        # tf.summary has no implementation without the tensorboard package.
        logging.warning(
            "pruning: tensorboard is not installed; no pruning summaries in %s", log_dir
        )
    return result


def strip(model: keras.Model) -> keras.Model:
    """The model without pruning wrappers, each pruned kernel multiplied by its mask.

    A no-op (the same object) on a model without wrappers. The stripped layers are the wrapped
    ones, so they keep a note of which of their weights were pruned (see ``sparsity_report``).
    """
    if not has_wrappers(model):
        return model
    for layer in model.layers:
        if isinstance(layer, _Wrapper):
            # UpdatePruningStep re-masks at epoch ends only; a run stopped mid-epoch still needs it.
            for weight, mask, _ in layer.pruning_vars:
                weight.assign(tf.cast(weight * mask, weight.dtype))
    return _sparsity.strip_pruning(model)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def _pruned_names(layer) -> tuple[str, ...] | None:
    """Weight names pruned in ``layer``, or None where the model does not say."""
    if isinstance(layer, _Wrapper):
        return tuple(_short_name(w) for w, _, _ in layer.pruning_vars)
    mark = getattr(layer, _PRUNED_MARK, None)
    if mark is not None:
        return tuple(mark)
    return None


def sparsity_report(model: keras.Model, pruning_config=None) -> dict:
    """Measured sparsity (fraction of exact zeros) per kernel, per kind and overall.

    What counts as pruned: the wrappers (on a pruned model), or the note ``apply`` leaves on a
    stripped model's layers; a model loaded from disk has neither, so then ``pruning_config``
    (re-planned on the model) decides, and without it every kernel counts.

    Returns:
      JSON-able ``{"overall": {...}, "by_kind": {kind: {...}}, "all_kernels": {...},
      "layers": {"<layer>/<weight>": {"kind", "pruned", "shape", "size", "zeros", "sparsity"}},
      "source": "wrappers" | "apply" | "config" | "all_kernels"}``; each ``{...}`` is
      ``{"size", "zeros", "sparsity"}``, ``overall`` and ``by_kind`` over the pruned kernels.
    """
    marked = {layer.name: _pruned_names(layer) for layer in model.layers}
    if any(isinstance(layer, _Wrapper) for layer in model.layers):
        source = "wrappers"
    elif any(v is not None for v in marked.values()):
        source = "apply"
    elif pruning_config is not None:
        source = "config"
        planned = plan(model, pruning_config) if is_enabled(pruning_config) else {}
        marked = {
            name: tuple(_short_name(c.weight) for c in cands) for name, cands in planned.items()
        }
    else:
        source = "all_kernels"
    layers_out: dict[str, dict] = {}
    totals: dict[str, list[int]] = {}

    def add(key, size, zeros):
        entry = totals.setdefault(key, [0, 0])
        entry[0] += size
        entry[1] += zeros

    for layer in model.layers:
        names = marked.get(layer.name)
        for cand in prunable_candidates(layer):
            value = np.asarray(cand.weight.numpy())
            name = _short_name(cand.weight)
            pruned = source == "all_kernels" or bool(names and name in names)
            size, zeros = int(value.size), int(np.count_nonzero(value == 0))
            inner_name = layer.layer.name if isinstance(layer, _Wrapper) else layer.name
            layers_out[f"{inner_name}/{name}"] = {
                "kind": cand.kind,
                "pruned": pruned,
                "shape": [int(d) for d in value.shape],
                "size": size,
                "zeros": zeros,
                "sparsity": zeros / size if size else 0.0,
            }
            add("all", size, zeros)
            if pruned:
                add("overall", size, zeros)
                add(cand.kind, size, zeros)

    def summary(key):
        size, zeros = totals.get(key, [0, 0])
        return {"size": size, "zeros": zeros, "sparsity": zeros / size if size else 0.0}

    return {
        "overall": summary("overall"),
        "by_kind": {kind: summary(kind) for kind in KINDS if kind in totals},
        "all_kernels": summary("all"),
        "layers": layers_out,
        "source": source,
    }
