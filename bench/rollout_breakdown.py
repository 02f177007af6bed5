"""Where a run's rollout position error comes from after N frames: still against moving players.

    python bench/rollout_breakdown.py RUN_DIR --data /tmp/benchroot [--steps 60] [--starts 128]

Rolls the run's best checkpoint out from the same starts as ``meleewm eval`` and splits the x/y
error at the last step by what the real player did over the window: on the ground or in the air
at the end, height never changed, on the ground throughout, took a hit, left the ground without
one. Each line gives the model's error beside persistence's on the same player-windows (game
units) and the group's share of the model's total error, so a model that drifts while the real
character stands still shows up at once. Then the same windows by the step at which the predicted
action first differs from the real one, and the transitions at that step (last real action, real
next action, predicted action) that hold the most error at the last step: where rollouts go wrong
first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.rollout_args import parse_rollout_run  # noqa: E402
from meleewm_core.eval import choose_starts, model_predictor, rollout, val_arrays  # noqa: E402


def main() -> None:
    args, run, data = parse_rollout_run(__doc__.split("\n\n")[0])
    spec, context_len = run.layout.spec, run.experiment.model.context_len
    trace = rollout(
        model_predictor(run.model),
        data,
        run.layout,
        context_len,
        steps=args.steps,
        starts=args.starts,
        device=run.device,
    )
    floats, ints, games = val_arrays(data)
    rows = np.array(
        [row for _, row in choose_starts(ints, games, spec, context_len, args.steps, args.starts)]
    )
    last = args.steps - 1

    def encoded(name: str, step: int) -> np.ndarray:
        """(starts, players): the real encoded value at rollout step ``step`` (-1: last context frame)."""
        return np.stack([floats[rows + step][:, spec.float_col(p, name)] for p in range(2)], 1)

    start_xy = np.stack([encoded(axis, -1) / spec.scale(axis) for axis in "xy"], -1)
    real, model = trace.true_xy[:, last], trace.model_xy[:, last]
    grounded = np.stack([encoded("on_ground", s) > 0.5 for s in range(args.steps)], 1)
    scored = trace.valid[:, last][:, None]
    percent = np.stack([encoded("percent", s) for s in range(-1, args.steps)], 1)
    hit = (np.diff(percent, axis=1) > 1e-6).any(1)
    groups = {
        "all": np.ones_like(grounded[:, 0]),
        "on the ground at the end": grounded[:, -1],
        "in the air at the end": ~grounded[:, -1],
        "height never changed": np.abs(real[..., 1] - start_xy[..., 1]) < 0.01,
        "on the ground throughout": grounded.all(1),
        "hit (damage taken)": hit,
        "no hit, left the ground": ~hit & ~grounded.all(1),
    }
    # Share of the model's total x+y error at the last step that each group holds.
    model_error = np.abs(model - real).sum(-1)
    total_error = model_error[scored.repeat(2, 1)].sum()
    result = {}
    for name, mask in groups.items():
        mask = mask & scored
        errors = {
            axis: {
                "model": float(np.abs(model[..., i] - real[..., i])[mask].mean()),
                "persistence": float(np.abs(start_xy[..., i] - real[..., i])[mask].mean()),
            }
            for i, axis in enumerate("xy")
        }
        share = float(model_error[mask].sum() / total_error)
        result[name] = {"player_windows": int(mask.sum()), **errors, "share_of_error": share}
        print(
            f"{name:<26}{int(mask.sum()):>5} windows   x {errors['x']['model']:6.2f} (persistence "
            f"{errors['x']['persistence']:6.2f})   y {errors['y']['model']:6.2f} (persistence "
            f"{errors['y']['persistence']:6.2f})   {share:4.0%} of the error"
        )
    opening = np.stack([ints[rows - 1][:, spec.int_col(p, "action")] for p in range(2)], 1)
    divergence = first_divergence(trace, opening, scored[:, 0], model_error / 2, args.steps)
    print(json.dumps({"steps": args.steps, "groups": result, "first_divergence": divergence}))


def first_divergence(
    trace, opening: np.ndarray, scored: np.ndarray, error: np.ndarray, steps: int, top: int = 12
) -> dict:
    """Split the scored player-windows by the first step where the predicted action is not the
    real one, and list the transitions at that step (last real action, real next action, predicted
    action) that hold the most of the x/y ``error`` (starts, players) at the last step; print both.
    ``opening`` (starts, players) is each start's last real action before the rollout."""
    wrong = trace.model_actions != trace.true_actions  # (starts, steps, players)
    kept = np.flatnonzero(scored)
    first = np.where(wrong.any(1), wrong.argmax(1), steps)[kept]  # (scored, players), 0-based; steps: never
    last_error = error[kept]
    total = last_error.sum()
    split = {}
    print(f"\nfirst wrong action (median step {np.median(first) + 1:.0f}); x/y error at step {steps}:")
    for lo, hi in [(0, 5), (5, 15), (15, 30), (30, steps), (steps, steps + 1)]:
        mask = (first >= lo) & (first < hi)
        name = "never" if lo == steps else f"steps {lo + 1}-{hi}"
        mean = float(last_error[mask].mean()) if mask.any() else float("nan")
        share = float(last_error[mask].sum() / total)
        split[name] = {"player_windows": int(mask.sum()), "error": mean, "share_of_error": share}
        print(f"  {name:<14}{int(mask.sum()):>5} windows   error {mean:6.2f}   {share:4.0%} of the error")
    transitions: dict[tuple[int, int, int], list[float]] = {}
    for row, player in np.ndindex(first.shape):
        n, step = kept[row], first[row, player]
        if step == steps:
            continue
        before = trace.true_actions[n, step - 1, player] if step else opening[n, player]
        key = (
            int(before),
            int(trace.true_actions[n, step, player]),
            int(trace.model_actions[n, step, player]),
        )
        transitions.setdefault(key, []).append(float(last_error[row, player]))
    ranked = sorted(transitions.items(), key=lambda item: -sum(item[1]))[:top]
    print("  at the first wrong action (last action -> real, predicted): windows, share of the error")
    for (before, real, predicted), errors in ranked:
        print(
            f"    {before:>4} -> {real:>4}, predicted {predicted:>4}: {len(errors):>3}   {sum(errors) / total:4.0%}"
        )
    return {
        "by_step": split,
        "transitions": [
            {
                "last": k[0],
                "real": k[1],
                "predicted": k[2],
                "player_windows": len(v),
                "share_of_error": float(sum(v) / total),
            }
            for k, v in ranked
        ],
    }


if __name__ == "__main__":
    main()
