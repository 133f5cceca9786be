"""Smoke test of ``benchmark.py layers``: it runs, covers every candidate and writes its docs.

Speed is never asserted; the tables' MACs columns are checked against the layers' own costs.
"""

import re

import pytest

from layers import conv_ops
from tests.bench.cli import run_benchmark


def run_layers_benchmark(*args: str):
    return run_benchmark("layers", *args)


@pytest.mark.slow
def test_quick_run_prints_both_tables_and_writes_docs(tmp_path):
    result = run_layers_benchmark("--quick", "--tflite", "--write_docs", f"--docs_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        line.split("|")[1:-1] for line in result.stdout.splitlines() if re.match(r"\| \d", line)
    ]
    names = {cells[1].strip() for cells in rows}
    for expected in (
        "dense 1×1 Conv2D",
        "Keras Conv2D(groups=3)",
        "GroupConv2D auto",
        "GroupConv2D split-concat",
        "GroupConv2D matmul",
        "ChannelShuffle(3)",
        "standard 3×3",
        "depthwise separable 3×3",
        "spatially separable 3×1+1×3",
        "grouped 3×3 G=8",
        "grouped 1×1 G=2",
    ):
        assert expected in names, (expected, sorted(names))
    # The explicit native formulation runs only where the kernels can train it (the subprocess
    # shares this process's kernel set): timed there, left out (not failed) elsewhere.
    assert ("GroupConv2D native" in names) == conv_ops.supports("grouped_conv"), sorted(names)
    by_name = {(cells[0].strip(), cells[1].strip()): cells for cells in rows}
    # 2×8×8×24→48 comparison shape: grouped 3×3 G=4 has a quarter of the standard 3×3's MACs.
    shape = "2×8×8×24→48"
    assert float(by_name[shape, "standard 3×3"][2]) == pytest.approx(
        8 * 8 * 9 * 24 * 48 / 1e6, rel=1e-3
    )
    assert by_name[shape, "grouped 3×3 G=4"][3].strip() == "0.250"
    assert all(cells[7].strip() not in ("", "–") for cells in rows)  # every TFLite time present
    docs = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- BEGIN layers -->" in docs and "GroupConv2D auto" in docs
    assert (tmp_path / "layers_macs_vs_time.png").stat().st_size > 1000


def test_bad_flag_value_exits_with_a_message():
    result = run_layers_benchmark("--quick", "--repeats=0")
    assert result.returncode != 0
    assert "--repeats=0" in result.stderr
