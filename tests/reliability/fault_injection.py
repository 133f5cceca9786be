"""Fault injection: ``kill -9`` a short digits run at random moments, resume it each time.

    python -m tests.reliability.fault_injection                # 10 kills, seed 0
    python -m tests.reliability.fault_injection --kills=3 --seed=1 --root=/tmp/fi

First one uninterrupted reference run is timed (its wall time ``D``). Then ``train.py`` is
started and killed with SIGKILL after a random delay in ``[0.2 D, D]`` (so kills land during
start-up, training steps, checkpoint writes, evaluation and export alike), and the same command
is started again in the same workdir, until ``--kills`` kills have landed; a run that finishes
before its kill is checked and a new one begins. Every run must end (exit 0) with the
reference's step and epoch counts in ``metrics.json`` and exactly one ``metrics.csv`` row per
epoch. Prints one JSON line per run and a summary; exits 1 on any failure.

Not part of the pytest suite: each start loads TensorFlow (~10 s of CPU), so ten kills cost
minutes. ``tests/trainer/test_train.py`` keeps one kill-and-resume check in the suite.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EPOCHS, STEPS = 3, 8
FLAGS = [
    "--config=configs/digits.py:mobilenet_v1_025",
    f"--config.train.epochs={EPOCHS}",
    f"--config.train.steps_per_epoch={STEPS}",
    "--config.train.batch_size=32",
    "--config.train.eval_steps=2",
    "--config.train.checkpoint_every_steps=2",
    "--config.train.verbose=2",
    "--config.export.formats=keras",
]


def start(workdir: str, log) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.Popen(
        [sys.executable, "train.py", f"--workdir={workdir}", *FLAGS],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def check(workdir: str, code: int) -> dict:
    """What the finished run left: exit code, steps, epochs, metrics.csv epochs, top-1."""
    result = {"workdir": workdir, "exit_code": code}
    try:
        with open(os.path.join(workdir, "metrics.json")) as f:
            final = json.load(f)["final"]
        with open(os.path.join(workdir, "metrics.csv")) as f:
            rows = [int(row["epoch"]) for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError) as error:
        return {**result, "ok": False, "error": repr(error)}
    result.update(
        steps=final["steps"], epochs=final["epochs"], csv_epochs=rows, val_top1=final["val_top1"]
    )
    result["ok"] = (
        code == 0
        and (final["steps"], final["epochs"]) == (EPOCHS * STEPS, EPOCHS)
        and rows == list(range(1, EPOCHS + 1))
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default="")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = args.root or tempfile.mkdtemp(prefix="fault_injection_")
    os.makedirs(root, exist_ok=True)
    log = open(os.path.join(root, "train.log"), "ab")  # noqa: SIM115  every child appends

    started = time.perf_counter()
    reference = os.path.join(root, "reference")
    code = start(reference, log).wait()
    duration = time.perf_counter() - started
    runs = [check(reference, code)]
    print(json.dumps({"reference_seconds": round(duration, 1), **runs[0]}), flush=True)

    kills, count, workdir, kill_log = 0, 0, None, []
    while kills < args.kills:
        if workdir is None:
            count += 1
            workdir = os.path.join(root, f"run{count}")
        process = start(workdir, log)
        delay = rng.uniform(0.2, 1.0) * duration
        try:
            code = process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            kill_log.append({"run": count, "after_seconds": round(delay, 1)})
            continue
        runs.append(check(workdir, code))  # finished before its kill
        print(json.dumps(runs[-1]), flush=True)
        workdir = None
    if workdir is not None:  # resume the last killed run to the end
        runs.append(check(workdir, start(workdir, log).wait()))
        print(json.dumps(runs[-1]), flush=True)
    summary = {
        "kills": kill_log,
        "runs": len(runs),
        "all_ok": all(run["ok"] for run in runs),
        "seconds": round(time.perf_counter() - started, 1),
        "log": log.name,
    }
    print(json.dumps(summary), flush=True)
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
