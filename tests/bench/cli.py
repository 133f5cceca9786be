"""Running ``benchmark.py`` commands in a subprocess, as a user would, for the bench tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.model_checks import REPO_ROOT


def run_benchmark(*args: str) -> subprocess.CompletedProcess:
    """``python benchmark.py ARGS`` from the repository root, CPU only, output captured."""
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
    }
    return subprocess.run(
        [sys.executable, "benchmark.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def json_lines(stdout: str) -> list[dict]:
    """The JSON objects a ``--json`` run printed, one per line."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
