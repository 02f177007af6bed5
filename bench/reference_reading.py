"""Rollout position error read two ways: at step N, and averaged over steps 1..N.

    python bench/reference_reading.py --data /tmp/benchroot RUN_DIR [RUN_DIR ...] [--steps 60 500] [--starts 64]

The reference implementation reported its rollout drifting "to a position error of 9 game units
after 60 frames and 57 after 500" without saying how the steps were aggregated. ``meleewm eval``
reports the error at each step; this prints, for each run and horizon, the error at the last step
and the mean over all steps for the model, persistence and constant velocity (the same starts as
``meleewm eval``: spread over the validation games, with room for the whole horizon), so the
reference's figures can be set against both readings. One JSON line per run and horizon.
"""

from __future__ import annotations

import argparse
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
        for steps in args.steps:
            trace = rollout(
                model_predictor(run.model),
                data,
                run.layout,
                run.experiment.model.context_len,
                steps=steps,
                starts=args.starts,
                device=run.device,
            )
            position = trace.report.fields["position"]
            scored = [v for v in position["model"] if not math.isnan(v)]
            print(
                json.dumps(
                    {
                        "run": str(run_dir),
                        "experiment": run.experiment.name,
                        "steps": steps,
                        "starts": trace.report.num_starts,
                        "scored_at_last_step": trace.report.counts[-1],
                        "at_last_step": {who: round(v[-1], 2) for who, v in position.items()},
                        "mean_over_steps": {
                            who: round(sum(v[: len(scored)]) / len(scored), 2) for who, v in position.items()
                        },
                    }
                )
            )


if __name__ == "__main__":
    main()
