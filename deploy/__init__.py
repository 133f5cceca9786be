"""Shipping a model: the run directory layout, loading any saved model, export formats, the one
TFLite path, parity checks and evaluation metrics.

``workdir.py`` (the layout), ``paths.py`` (what kind a model PATH is; no TensorFlow), ``loading.py``
(every kind -> one ``predict``), ``tflite.py`` (the one converter and interpreter), ``export.py``
(every format, parity, sizes), ``metrics.py`` (top-1/top-5/loss/confusion, latency). Importing
this package loads no TensorFlow, so the command lines can check a path first.
"""
