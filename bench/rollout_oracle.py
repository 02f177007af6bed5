"""How far a run's rollouts would get if some of what it predicts were right: the rollout target's ceiling.

    python bench/rollout_oracle.py RUN_DIR --data /tmp/meleewm-quality [--steps 60] [--starts 128]

Rolls the run's best checkpoint out from the same starts as ``meleewm eval`` several times, each
time feeding back the real next value of some fields instead of the model's (an oracle for them)
and the model's own prediction for the rest, and prints the x/y error at the report steps:

* the model alone (``meleewm eval``'s figure);
* the real action and state_age; the real on_ground; both; every real categorical and binary;
* those and the real velocities (the position heads still predict x and y);
* those, with x and y moved by the real next velocities (Melee moves a player by its self and
  knockback velocities each frame: air + knockback while airborne, ground + knockback on the
  ground, where y stays the model's).

A field whose oracle closes most of the gap is where the model's error comes from; the last line
is the most a kinematic position step could give with velocities that are right.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.rollout_args import parse_rollout_run  # noqa: E402
from meleewm_core.data import Batch  # noqa: E402
from meleewm_core.encoding import BINARY_FIELDS, NUM_PLAYERS, VELOCITY_FIELDS  # noqa: E402
from meleewm_core.eval import REPORT_STEPS, model_predictor, rollout  # noqa: E402
from meleewm_core.models.mlp import DECIDED_LOGIT, decided_logits  # noqa: E402

ORACLES = {
    "model alone": (),
    "real action": ("action", "state_age"),
    "real on_ground": ("on_ground",),
    "real action + on_ground": ("action", "state_age", "on_ground"),
    "real categoricals + binaries": ("categoricals", "binaries"),
    "... + real velocities": ("categoricals", "binaries", "velocities"),
    "... + x/y moved by them": ("categoricals", "binaries", "velocities", "kinematic"),
}


def oracle_predictor(model, layout, real: tuple[str, ...]):
    """The model's outputs with the named fields' heads replaced by the real next frame's values."""
    spec, predict = layout.spec, model_predictor(model)
    slots = layout.continuous_cols

    def slot(player: int, name: str) -> int:
        return slots.index(spec.float_col(player, name))

    def predict_with(batch: Batch) -> dict[str, torch.Tensor]:
        outputs = predict(batch)
        last, target = batch.float_ctx[:, -1].float(), batch.float_tgt.float()
        for key, player, name, _ in layout.logit_heads:
            if "categoricals" in real or name in real:
                outputs[key] = decided_logits(batch.int_tgt[:, spec.int_col(player, name)], outputs[key])
        for i, (p, name) in enumerate(itertools.product(range(NUM_PLAYERS), BINARY_FIELDS)):
            if "binaries" in real or name in real:
                outputs["binary_logits"][:, i] = DECIDED_LOGIT * (2 * target[:, spec.float_col(p, name)] - 1)
        delta = outputs["continuous_delta"].clone()
        for p in range(NUM_PLAYERS):
            if "velocities" in real:
                for name in VELOCITY_FIELDS:
                    col = spec.float_col(p, name)
                    delta[:, slot(p, name)] = target[:, col] - last[:, col]
            if "kinematic" in real:
                speed = {
                    name: target[:, spec.float_col(p, name)] / spec.scale(name) for name in VELOCITY_FIELDS
                }
                grounded = target[:, spec.float_col(p, "on_ground")] > 0.5
                dx = torch.where(grounded, speed["self_x_ground"], speed["self_x_air"]) + speed["knockback_x"]
                dy = speed["self_y"] + speed["knockback_y"]
                delta[:, slot(p, "x")] = dx * spec.scale("x")
                delta[:, slot(p, "y")] = torch.where(grounded, delta[:, slot(p, "y")], dy * spec.scale("y"))
        outputs["continuous_delta"] = delta
        return outputs

    return predict_with


def main() -> None:
    args, run, data = parse_rollout_run(__doc__.split("\n\n")[0])
    if run.experiment.model.heads != "full_state":
        sys.exit(
            f"{args.run_dir}: the oracles replace full_state heads; this run has {run.experiment.model.heads!r}"
        )
    steps = [s for s in REPORT_STEPS if s <= args.steps]
    result = {}
    for label, real in ORACLES.items():
        trace = rollout(
            oracle_predictor(run.model, run.layout, real),
            data,
            run.layout,
            run.experiment.model.context_len,
            steps=args.steps,
            starts=args.starts,
            device=run.device,
        )
        errors = {}
        for step in steps:
            scored = np.asarray(trace.valid[:, step - 1])
            error = np.abs(trace.model_xy[:, step - 1] - trace.true_xy[:, step - 1])[scored]
            errors[step] = {
                "x": float(error[..., 0].mean()),
                "y": float(error[..., 1].mean()),
                "position": float(error.mean()),
            }
        result[label] = errors
        line = "  ".join(f"@{s} {e['position']:6.2f}" for s, e in errors.items())
        last = errors[steps[-1]]
        print(f"{label:<32}{line}   (x {last['x']:.2f}, y {last['y']:.2f} at step {steps[-1]})")
    print(json.dumps({"steps": args.steps, "starts": args.starts, "oracles": result}))


if __name__ == "__main__":
    main()
