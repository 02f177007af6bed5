"""Which action changes a run predicts one frame ahead: recall per (last action -> next action).

    python bench/transitions.py RUN_DIR --data /tmp/benchroot [--split val|train] [--top 20]

Runs the run's best checkpoint over every frame of its validation (or training) games where a
player's action changes, with the real context and controllers, and prints the most frequent
transitions (Melee action state ids: 14 Wait, 20 Dash, 24 jump squat, 25/26 jump forward/back,
29 Fall, 42 Landing, ...) with how many the model got, then every transition in one JSON line.
A transition the controller decides (jump pressed while standing, the stick smashed from neutral)
that the model misses shows up at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meleewm_core.data import WindowColumns, gather_batch  # noqa: E402
from meleewm_core.encoding import NUM_PLAYERS  # noqa: E402
from meleewm_core.eval import load_run, model_predictor, open_val_data, val_arrays  # noqa: E402
from meleewm_core.store import DataRoot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", help="data root holding the run's shards (default $MELEEWM_DATA)")
    parser.add_argument("--split", choices=("val", "train"), default="val")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    run = load_run(args.run_dir, args.device)
    data = open_val_data(run, DataRoot.from_env(args.data), run.manifest["game_md5s"][args.split])
    spec, context_len = run.layout.spec, run.experiment.model.context_len
    predict = model_predictor(run.model)
    floats, ints, games = val_arrays(data)
    floats_t, ints_t = torch.from_numpy(floats), torch.from_numpy(ints).long()
    cols = WindowColumns(spec, context_len, run.device)

    seen, found = Counter(), Counter()
    for player in range(NUM_PLAYERS):
        action = ints[:, spec.int_col(player, "action")]
        rows = np.concatenate([np.arange(first + context_len, first + frames) for _, first, frames in games])
        rows = rows[action[rows] != action[rows - 1]]
        for chunk in np.array_split(rows, max(1, len(rows) // 4096)):
            batch = gather_batch(floats_t, ints_t, torch.from_numpy(chunk).to(run.device), cols)
            guess = predict(batch)[f"p{player}_action_logits"].argmax(1).cpu().numpy()
            for row, predicted in zip(chunk, guess, strict=True):
                transition = (int(action[row - 1]), int(action[row]))
                seen[transition] += 1
                found[transition] += int(predicted == action[row])

    total, hits = sum(seen.values()), sum(found.values())
    print(f"{args.split} games: {total} action changes, {hits} predicted ({hits / max(total, 1):.3f})")
    for (before, after), count in seen.most_common(args.top):
        print(f"{before:>4} -> {after:<4} {found[before, after]:>5} of {count:<5}")
    print(
        json.dumps(
            {
                "split": args.split,
                "changes": total,
                "predicted": hits,
                "transitions": [
                    {"from": b, "to": a, "count": n, "predicted": found[b, a]}
                    for (b, a), n in seen.most_common()
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
