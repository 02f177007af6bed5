"""The command line the rollout diagnostics share: a run, its data root, steps, starts and device."""

from __future__ import annotations

import argparse

from meleewm_core.data import FrameData
from meleewm_core.eval import EvaluableRun, load_run, open_val_data
from meleewm_core.store import DataRoot


def parse_rollout_run(description: str) -> tuple[argparse.Namespace, EvaluableRun, FrameData]:
    """Parse ``RUN_DIR [--data ROOT] [--steps N] [--starts N] [--device D]``; load the run's best
    checkpoint and open its validation games."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run_dir")
    parser.add_argument("--data", help="data root holding the run's shards (default $MELEEWM_DATA)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--starts", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    run = load_run(args.run_dir, args.device)
    return args, run, open_val_data(run, DataRoot.from_env(args.data))
