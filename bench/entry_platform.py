"""A trained world model's rollouts with ``model.entry_platform`` off and on, on the same rollouts.

    python bench/entry_platform.py --data ROOT RUN_DIR [RUN_DIR ...] [--starts 128]

The rule measures nothing on the training games and applies to predictions only, so training with
it learns the same weights as without (only validation, and so the choice of ``best.pt``, may
differ): this switches it on in place on a trained run. For each run it
prints one JSON line per setting with the position error (per axis, game units) from each
validation game's start at steps 20, 60 and 500 (the reference implementation's protocol) and
from ``--starts`` spread starts at step 60 (``meleewm eval``'s), beside persistence and constant
velocity.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meleewm_core.eval import load_run, model_predictor, open_val_data, rollout  # noqa: E402
from meleewm_core.store import DataRoot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--data", help="data root holding the runs' shards (default $MELEEWM_DATA)")
    parser.add_argument("--starts", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    root = DataRoot.from_env(args.data)
    for run_dir in args.run_dirs:
        run = load_run(run_dir, args.device)
        if run.experiment.model.context_len < 2:
            sys.exit(f"{run_dir}: the entry platform needs context_len >= 2")
        data = open_val_data(run, root)
        context_len = run.experiment.model.context_len
        for on in (False, True):
            run.model.entry_platform = on
            line = {"run": str(run_dir), "experiment": run.experiment.name, "entry_platform": on}
            for protocol, steps, at in (("game_start", 500, (20, 60, 500)), ("spread", 60, (60,))):
                report = rollout(
                    model_predictor(run.model),
                    data,
                    run.layout,
                    context_len,
                    steps=steps,
                    starts=args.starts,
                    from_game_start=protocol == "game_start",
                    device=run.device,
                ).report
                line[protocol] = {
                    "rollouts": report.num_starts,
                    **{
                        str(step): {
                            who: round(v[step - 1], 2) for who, v in report.fields["position"].items()
                        }
                        for step in at
                    },
                }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
