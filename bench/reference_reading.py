"""Rollout position error read every way the reference's figures could mean, per run and horizon.

    python bench/reference_reading.py --data /tmp/benchroot RUN_DIR [RUN_DIR ...] [--steps 60 500] [--starts 64]

The reference implementation reported its rollout drifting "to a position error of 9 game units
after 60 frames and 57 after 500" without saying how it measured. For each run, horizon N and
protocol this prints the error at step N and the mean over steps 1..N, per axis (``position``, the
unit of ``meleewm eval``) and as Euclidean ``distance``, for the model, persistence and constant
velocity. Protocols: ``spread`` (``meleewm eval``'s starts, spread over the validation games with
room for N frames) and ``game_start`` (one rollout from each validation game's first frames, as
the reference's ``rollout.py`` seeds it). One JSON line per run, horizon and protocol.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meleewm_core.eval import load_run, model_predictor, open_val_data, rollout  # noqa: E402
from meleewm_core.store import DataRoot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--data", help="data root holding the runs' shards (default $MELEEWM_DATA)")
    parser.add_argument("--steps", type=int, nargs="+", default=[60, 500])
    parser.add_argument("--starts", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    root = DataRoot.from_env(args.data)
    for run_dir in args.run_dirs:
        run = load_run(run_dir, args.device)
        data = open_val_data(run, root)
        for steps, protocol in itertools.product(args.steps, ("spread", "game_start")):
            report = rollout(
                model_predictor(run.model),
                data,
                run.layout,
                run.experiment.model.context_len,
                steps=steps,
                starts=args.starts,
                from_game_start=protocol == "game_start",
                device=run.device,
            ).report
            scored = sum(1 for v in report.fields["position"]["model"] if not math.isnan(v))
            line = {
                "run": str(run_dir),
                "experiment": run.experiment.name,
                "steps": steps,
                "protocol": protocol,
                "starts": report.num_starts,
                "scored_at_last_step": report.counts[-1],
            }
            for field in ("position", "distance"):
                by = report.fields[field]
                line[field] = {
                    "at_last_step": {who: round(v[-1], 2) for who, v in by.items()},
                    "mean_over_steps": {who: round(sum(v[:scored]) / scored, 2) for who, v in by.items()},
                }
            print(json.dumps(line))


if __name__ == "__main__":
    main()
