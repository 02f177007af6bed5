"""Train experiment variants and score each one step ahead and in 60-frame rollouts, in one call.

    python bench/sweep.py [--out FILE] [--budget-s S] [--starts N] [--ablate NAME] ROOT CONFIG [KEY=VALUE ...] [-- ROOT CONFIG [KEY=VALUE ...]] ...

(the options go first: everything after ROOT belongs to the jobs). One job per GPU on a machine
with several: ``CUDA_VISIBLE_DEVICES=i python bench/sweep.py --out gi.json ... &`` for each i.

ROOT is a data root (parsed games + manifest, or just the shard folder on a GPU box without polars:
``train.ensure_shards`` then uses the folder as it is); CONFIG an experiment file; each KEY=VALUE a
dotted override (``train.epochs=10``). For each job it trains with ``train_run``, then rolls the
best checkpoint out from ``--starts`` (128, as ``meleewm eval``) starts over the run's validation
games (``eval.rollout``, no plots, so it runs where matplotlib is missing) and prints one JSON
line: the four headline validation metrics beside persistence, the per-field metrics that do not
beat persistence, and the rollout position error at steps 1-60 for the model, persistence and
constant velocity. ``--budget-s`` skips the jobs that would start after it; ``--out`` also writes
the list as JSON. ``--ablate NAME`` scores the same checkpoint again, one step ahead on the
validation games and rolled out, with the model's rule NAME (``respawn_sequence``, ``blast_zones``,
``air_physics``, ``hit_tables``, ``hurtbox_from_invulnerable``, ``ecb_landing``,
``ground_from_surfaces``, ``action_tables``, ``air_drift``, ``ground_friction``) switched off, and
with it on on the same windows, so a rule's effect is measured without a second training's noise; a
rule the experiment does not use is an error.

Step 60 over 128 starts of one validation game is noisy even paired: one rule's effect measured
that way on four checkpoints ranged from -0.45 to +0.45 units, where over 512 starts none of the four
was further off (BENCHMARKS.md, 2026-11-28 12:44-14:00 UTC); ablate with ``--starts 512``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meleewm_core.config import load_experiment, parse_assignments  # noqa: E402
from meleewm_core.data import make_batches  # noqa: E402
from meleewm_core.eval import (  # noqa: E402
    EvaluableRun,
    RolloutReport,
    load_run,
    model_predictor,
    open_val_data,
    rollout,
    teacher_forced,
)
from meleewm_core.metrics import beats_baseline  # noqa: E402
from meleewm_core.store import DataRoot  # noqa: E402
from meleewm_core.train import train_run  # noqa: E402

HEADLINE = ("action_acc", "action_change_acc", "position_mae", "damage_mae")


def rollout_position(
    run: EvaluableRun, root: DataRoot, context_len: int, starts: int
) -> tuple[RolloutReport, dict]:
    """The run's 60-step rollout from ``starts`` starts, and its position error per reported step."""
    report = rollout(
        model_predictor(run.model),
        open_val_data(run, root),
        run.layout,
        context_len,
        steps=60,
        starts=starts,
        device=run.device,
    ).report
    return report, {
        step: {who: round(v, 2) for who, v in by.items()} for step, by in report.at_steps["position"].items()
    }


def one_step(run: EvaluableRun, root: DataRoot, context_len: int) -> dict:
    """The run's validation metrics one step ahead (as ``meleewm eval`` scores them): each field
    beside persistence, and the fields where the model is not ahead."""
    batches = make_batches(
        open_val_data(run, root),
        "val",
        mode="memory",
        batch_size=1024,
        context_len=context_len,
        device=run.device,
        shuffle=False,
    )
    table = teacher_forced(
        model_predictor(run.model), batches, run.layout, run.experiment, delta_scale=run.delta_scale
    )[0]
    scored = {k: v for k, v in table.items() if "persistence" in v}
    return {
        "fields": {
            k: {who: round(v, 6) for who, v in by.items() if who != "constant_velocity"}
            for k, by in scored.items()
        },
        "not_ahead": [
            k
            for k, by in scored.items()
            if not beats_baseline({k: by["model"], f"baseline/{k}": by["persistence"]})[k]
        ],
    }


def run_job(root_path: str, config: str, sets: list[str], ablate: list[str], starts: int) -> dict:
    experiment = load_experiment(config, {"train.wandb": False, **parse_assignments(sets)})
    for name in ablate:
        if getattr(experiment.model, name, None) is not True:
            raise SystemExit(f"--ablate {name}: {config} does not switch on a model rule of that name")
    root = DataRoot.from_env(root_path)
    started = time.perf_counter()
    result = train_run(experiment, root, progress=False)
    train_s = time.perf_counter() - started
    run = load_run(result.run_dir, "auto")
    context_len = experiment.model.context_len
    report, position = rollout_position(run, root, context_len, starts)
    ablated = {}
    if ablate:
        ablated["with every rule"] = {"one_step": one_step(run, root, context_len)}
    for name in ablate:
        setattr(run.model, name, False)
        ablated[name] = {
            "rollout": rollout_position(run, root, context_len, starts)[1],
            "one_step": one_step(run, root, context_len),
        }
        setattr(run.model, name, True)
    last = result.manifest["all_epochs"][-1]
    return {
        "root": root_path,
        "config": config,
        "overrides": sets,
        "run_dir": str(result.run_dir),
        "train_s": round(train_s, 1),
        "samples_per_s": last["samples_per_s"],
        "val_games": len(result.manifest["game_md5s"]["val"]),
        "teacher_forced": {
            k: {"model": round(last["val"][k], 4), "persistence": round(last["val"][f"baseline/{k}"], 4)}
            for k in HEADLINE
        },
        "not_beating_persistence": [k for k, beats in last["beats_persistence"].items() if not beats],
        "rollout_position": position,
        "rollout_position_without": ablated,
        "rollout_scored_at_60": report.counts[-1],
        "sanity": report.sanity,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "jobs",
        nargs=argparse.REMAINDER,
        help="ROOT CONFIG [KEY=VALUE ...], jobs separated by --; after the options",
    )
    parser.add_argument("--budget-s", type=float, default=540)
    parser.add_argument("--out")
    parser.add_argument("--starts", type=int, default=128, help="rollout start points (default 128)")
    parser.add_argument(
        "--ablate",
        action="append",
        default=[],
        metavar="NAME",
        help="also roll out the same checkpoint with this model rule off (repeatable)",
    )
    args = parser.parse_args()
    jobs, current = [], []
    for word in args.jobs:
        if word == "--":
            jobs.append(current)
            current = []
        else:
            current.append(word)
    jobs = [job for job in [*jobs, current] if job]
    if not jobs or any(len(job) < 2 for job in jobs):
        parser.error("each job needs ROOT and CONFIG")
    deadline = time.perf_counter() + args.budget_s
    results = []
    for root_path, config, *sets in jobs:
        if time.perf_counter() > deadline:
            results.append({"root": root_path, "config": config, "overrides": sets, "skipped": "budget"})
            continue
        results.append(run_job(root_path, config, sets, args.ablate, args.starts))
        print(json.dumps(results[-1]), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
