"""The input pipeline: sources, decoding, preprocessing and augmentation, tf.data batching.

    from trainer.data import build_datasets
    bundle = build_datasets(config.data, image_size=224, preprocessing=spec.preprocessing,
                            batch_size=64)

``sources.py`` (where examples come from) -> ``decode.py`` (bytes to pixels, corrupt files)
-> ``preprocessing.py`` (crops, flips, normalisation) -> ``pipeline.py`` (the tf.data graph).
Segmentation sources (``shapes``, ``segfolder:<dir>``) go through ``segmentation.py`` (images
with masks, joint augmentation), which ``build_datasets`` hands them to. It imports nothing of
the library but ``architectures.Preprocessing`` and the ignore label of
``deploy.segmentation_metrics``.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from trainer.data.decode import decode_image  # noqa: E402
from trainer.data.pipeline import DataBundle, build_datasets, serving_preprocess  # noqa: E402
from trainer.data.preprocessing import eval_preprocess  # noqa: E402

__all__ = ["DataBundle", "build_datasets", "decode_image", "eval_preprocess", "serving_preprocess"]
