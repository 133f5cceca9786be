"""Writing benchmark results into the markdown docs, one named section per command."""

from __future__ import annotations

import datetime
import os
import platform
import re

DOCS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def machine_description() -> str:
    """One line naming the machine and versions the numbers were measured with."""
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    from layers import conv_ops

    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU(s)" if gpus else "no GPU"
    kernels = "oneDNN" if conv_ops.onednn_enabled() else "Eigen (no oneDNN)"
    return (
        f"{cpu}, {os.cpu_count()} cores, {device}, {kernels} CPU kernels; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}; "
        f"{datetime.date.today().isoformat()}"
    )


def update_section(path: str, section: str, markdown: str) -> None:
    """Replaces (or appends) the block between ``<!-- BEGIN section -->`` and ``<!-- END section -->``.

    Several commands share one document this way without overwriting each other's tables.
    """
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else (text.rstrip() + ("\n\n" if text.strip() else "") + block + "\n")
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
