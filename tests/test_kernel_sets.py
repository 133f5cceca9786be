"""The layer and every-family training tests under the *other* TensorFlow CPU kernel set.

TensorFlow switches its oneDNN kernels on by default only on CPUs with AVX-512/AMX; elsewhere
(most AVX2 CPUs) the Eigen kernels run, with other limits (grouped-conv gradients, fused ops,
unequal depthwise strides, dilated-conv gradients). The suite runs on whichever set this machine
defaults to; this test re-runs the kernel-sensitive tests in subprocesses with
``TF_ENABLE_ONEDNN_OPTS`` flipped, so a machine of either kind checks both. One subprocess per
path, so pytest-xdist's workers share them.
"""

import os
import subprocess
import sys

import pytest

from layers import conv_ops
from tests.model_checks import REPO_ROOT

KERNEL_SENSITIVE = ("tests/layers", "tests/architectures/test_family_training.py")
_LEG = "LIGHTNETS_OTHER_KERNEL_SET"


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get(_LEG)), reason="already the other kernel set")
@pytest.mark.parametrize("path", KERNEL_SENSITIVE)
def test_kernel_sensitive_tests_pass_under_the_other_kernel_set(path):
    other = "0" if conv_ops.onednn_enabled() else "1"
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=other, **{_LEG: "1"})
    env.pop("PYTEST_XDIST_WORKER", None)
    # The fresh-process and TFLite checks do not depend on the training kernels: skip them here.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    result = subprocess.run(
        [*command, path],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
    assert result.returncode == 0, (
        f"TF_ENABLE_ONEDNN_OPTS={other}: {summary[0]}\n{result.stdout[-6000:]}"
        f"\n{result.stderr[-2000:]}"
    )
