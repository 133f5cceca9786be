"""The model registry: variant names -> builders with their defaults.

Modelled on timm's registry. A family file decorates thin variant functions::

    @register_model(input_size=224, preprocessing=INCEPTION_PREPROCESSING,
                    recipe="mobilenet_v2_imagenet", paper_macs=300e6)
    def mobilenet_v2_100(**kwargs):
        return mobilenet_v2(alpha=1.0, **kwargs)

and users (the trainer included) only ever call ``create_model(name, **overrides)``,
``list_models(pattern)`` and ``get_model_spec(name)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from collections.abc import Callable

import tf_keras as keras
from absl import logging

from architectures import pretrained as pretrained_weights


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How images are normalised and cropped for a variant.

    Pixels are read as floats in [0, 255]; the model sees ``(pixel / 255 - mean) / std``.

    Attributes:
      mean: per-channel mean, on the [0, 1] pixel scale (RGB).
      std: per-channel standard deviation, on the [0, 1] pixel scale (RGB).
      crop_fraction: evaluation resizes to ``size / crop_fraction`` then centre-crops ``size``.
      interpolation: resize method name understood by ``tf.image.resize``.
    """

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"


# [-1, 1] scaling, as keras.applications' MobileNet, MobileNetV2 and Xception expect.
INCEPTION_PREPROCESSING = Preprocessing()
# torchvision/ImageNet statistics, as the ResNeXt and ShuffleNet reference code uses.
IMAGENET_PREPROCESSING = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


TASKS = ("classification", "segmentation")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered variant and everything the trainer and evaluation read from it.

    Attributes:
      name: the variant name, e.g. ``mobilenet_v2_100``.
      family: the family, e.g. ``mobilenet_v2`` (the module the variant lives in).
      builder: the variant function; takes the keras.applications keyword arguments.
      input_size: default (paper) square input size.
      min_input_size: smallest square input the architecture supports.
      num_classes: default number of classes.
      preprocessing: normalisation and crop defaults.
      recipe: name of the recommended training recipe, ``configs/<recipe>.py``.
      paper_macs: multiply-adds the paper publishes at ``input_size`` (None if it publishes none).
      paper_params: trainable parameters the paper (or keras.applications) publishes, if any.
      paper_macs_exclude_classifier: the published MACs leave out the final fully-connected layer
        (ShuffleNet v1's Table 1 does), so comparisons must too.
      knobs: the family's own builder arguments (``alpha``, ``groups``, ...), which
        ``create_model`` and ``config.model.kwargs`` may set (see ``family_knobs``).
      weights: the ImageNet weight files keras.applications publishes for the variant (None:
        none), for ``create_model(name, pretrained="imagenet")``.
      task: one of ``TASKS``: ``classification`` models map images to ``[B, num_classes]``,
        ``segmentation`` models to per-pixel ``[B, H, W, num_classes]`` logits.
    """

    name: str
    family: str
    builder: Callable[..., keras.Model]
    input_size: int = 224
    min_input_size: int = 32
    num_classes: int = 1000
    preprocessing: Preprocessing = INCEPTION_PREPROCESSING
    recipe: str = ""
    paper_macs: float | None = None
    paper_params: int | None = None
    paper_macs_exclude_classifier: bool = False
    knobs: tuple[str, ...] = ()
    weights: pretrained_weights.PublishedWeights | None = None
    task: str = "classification"


# Builder arguments every family takes; the others are the family's knobs.
_COMMON_ARGUMENTS = frozenset(
    {
        "input_shape",
        "num_classes",
        "include_top",
        "pooling",
        "dropout",
        "classifier_activation",
        "name",
    }
)


def family_knobs(builder: Callable) -> tuple[str, ...]:
    """The named arguments of a family builder that are not the keras.applications ones."""
    parameters = inspect.signature(builder).parameters.values()
    return tuple(
        p.name
        for p in parameters
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _COMMON_ARGUMENTS
    )


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(fn: Callable | None = None, *, override: bool = False, **spec_fields):
    """Registers a variant function under its own name; usable with or without arguments.

    Args:
      fn: the variant function (when used as ``@register_model`` without parentheses).
      override: replace an existing registration of the same name instead of failing.
      **spec_fields: ``ModelSpec`` fields (``input_size``, ``preprocessing``, ``recipe``, ...).

    Raises:
      ValueError: the name is taken (and ``override`` is False) or a field is unknown.
    """
    unknown = set(spec_fields) - {f.name for f in dataclasses.fields(ModelSpec)}
    if unknown:
        raise ValueError(
            f"register_model got unknown fields {sorted(unknown)}; "
            f"valid ones are the ModelSpec fields."
        )

    def decorator(variant_fn: Callable) -> Callable:
        name = variant_fn.__name__
        if name in _REGISTRY and not override:
            raise ValueError(
                f"Model '{name}' is already registered; pick another name or pass "
                f"register_model(override=True)."
            )
        fields = dict(spec_fields)
        family = fields.pop("family", variant_fn.__module__.rsplit(".", 1)[-1])
        _REGISTRY[name] = ModelSpec(name=name, family=family, builder=variant_fn, **fields)
        return variant_fn

    return decorator(fn) if fn is not None else decorator


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style wildcard, e.g. ``"shufflenet*"``."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def get_model_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` of a registered variant.

    Raises:
      ValueError: unknown name; the message lists close matches.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown model '{name}'.{hint} "
            f"See architectures.list_models() for all {len(_REGISTRY)} names."
        ) from None


def create_model(name: str, /, *, pretrained: str | None = None, **overrides) -> keras.Model:
    """Builds a registered variant, optionally starting from pretrained weights.

    Keyword arguments that are None never override the variant's defaults, so an unset flag
    passes through harmlessly. (For logits, pass ``classifier_activation="linear"``: a None
    would be dropped like any other.) ``input_shape`` defaults to ``(input_size, input_size, 3)`` and
    ``num_classes`` to the variant's.

    Args:
      name: a registered variant name (see ``list_models``).
      pretrained: None (fresh weights), ``"imagenet"`` (the weights keras.applications publishes
        for the variant, from the Keras cache or downloaded into it) or the path of an HDF5
        weight file (keras.applications' layout or the model's own). Layers the weights do not
        fit (a classifier for another ``num_classes``) start fresh; the log lists them. See
        ``architectures.pretrained``.
      **overrides: builder keyword arguments (``input_shape``, ``num_classes``, ``include_top``,
        ``pooling``, ``dropout``, ``classifier_activation`` and the family's own knobs).

    Returns:
      A functional ``keras.Model`` named after the variant.

    Raises:
      ValueError: unknown name or bad arguments; ``pretrained.PretrainedWeightsError`` (a
        ValueError) when the weights cannot be found or do not fit.
    """
    spec = get_model_spec(name)
    kwargs = {key: value for key, value in overrides.items() if value is not None}
    kwargs.setdefault("input_shape", (spec.input_size, spec.input_size, 3))
    kwargs.setdefault("num_classes", spec.num_classes)
    kwargs.setdefault("name", name)
    if pretrained is None:
        return spec.builder(**kwargs)
    if spec.weights is not None:
        for key, value in spec.weights.builder_kwargs.items():
            if kwargs.setdefault(key, value) != value:
                logging.warning(
                    "%s: %s=%r differs from the %r the published weights were trained with; "
                    "outputs will differ from %s's.",
                    name,
                    key,
                    kwargs[key],
                    value,
                    spec.weights.source,
                )
    height, width = tuple(kwargs["input_shape"])[:2]
    path = pretrained_weights.resolve(
        pretrained,
        spec.weights,
        model_name=name,
        input_size=height if height == width else None,
        include_top=kwargs.get("include_top", True),
    )
    model = spec.builder(**kwargs)
    pretrained_weights.load_weights(model, path, spec.weights, model_name=name)
    return model
