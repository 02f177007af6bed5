"""The quality table of issue 5: train the world models and the policy at equal budget, evaluate, compare.

    python bench/quality.py --data /tmp/meleewm-quality --out /tmp/meleewm-quality/quality.json

Parses every replay under ``--replays`` (default ``$MELEEWM_TEST_REPLAYS`` or ../shared/replays)
into ``--data`` unless a manifest is already there, trains ``baseline-v22``, ``exp-3a-full-state``,
``exp-6a-motion-prior``, ``exp-7c-motion-gate``, ``exp-7d-stage-surfaces``, ``exp-7e-transition-head``,
``exp-7h-mirror-swap``, ``exp-7i-flip-tables``, ``exp-7k-blast-zones``, ``exp-7l-air-physics``,
``exp-7m-hurtbox``, ``exp-7n-hit-tables``, ``exp-7o-landings``, ``exp-7r-ground-friction`` (with exp-7p's
and exp-7q's rules), ``exp-7u-entry-platform`` (the last eleven rollout-trained: 25-80 minutes each
on a 2-core CPU) and
``policy-v22`` for
``--epochs`` epochs each (the reference's figures are after 3), runs ``evaluate_run`` on each
(``--steps`` rollout frames from ``--starts`` starts) and prints one row per target: the figure,
its baseline, the target and whether it is met, for the rollouts from ``--starts`` starts and for
those from each validation game's start (500 frames, the reference's protocol). The JSON holds
every report.
``--reuse`` evaluates the newest finished runs again without training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meleewm_core.config import ExperimentConfig, load_experiment  # noqa: E402
from meleewm_core.eval import evaluate_run  # noqa: E402
from meleewm_core.metrics import lower_is_better  # noqa: E402
from meleewm_core.policy import train_policy_run  # noqa: E402
from meleewm_core.store import DataRoot  # noqa: E402
from meleewm_core.train import train_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The reference implementation's rollout position error after 60 and 500 frames (game units),
# rolled out from a game's start (its rollout.py).
REFERENCE_ROLLOUT = {60: 9.0, 500: 57.0}


def prepare(root: DataRoot, replays: Path) -> None:
    from meleewm_core.manifest import build_manifest
    from meleewm_core.parse import parse_paths

    if not root.manifest_path.is_file():
        summary = parse_paths([replays], root, source="shared", workers=2, progress=False)
        print(summary.describe())
        build_manifest(root)


def newest_finished_run(root: DataRoot, experiment: ExperimentConfig) -> Path | None:
    """The newest run of ``experiment`` that finished its epochs with the file's recipe (a run trained
    with other overrides, say another loss weight, is not the file's row)."""
    runtime = {"device", "wandb", "compile"}
    wanted = experiment.model_dump(mode="json", exclude={"train": runtime})
    for manifest_path in sorted(
        (Path(root.runs_dir) / experiment.name).glob("*/manifest.json"), reverse=True
    ):
        manifest = json.loads(manifest_path.read_text())
        try:
            recorded = ExperimentConfig.model_validate(manifest["config"])
        except ValidationError:  # a run of an option since removed
            continue
        finished = len(manifest.get("all_epochs", [])) == experiment.train.epochs
        if finished and recorded.model_dump(mode="json", exclude={"train": runtime}) == wanted:
            return manifest_path.parent
    return None


def reference_row(name: str, check: str, position: dict[str, float], reference: float) -> dict:
    """The rollout target: position error below the reference's and below constant velocity's."""
    return dict(
        run=name,
        check=check,
        model=position["model"],
        baseline=position["constant_velocity"],
        target=f"< {reference} and < constant velocity",
        met=position["model"] < reference and position["model"] < position["constant_velocity"],
    )


def world_rows(name: str, report) -> list[dict]:
    rows = []
    for metric, by in report.teacher_forced.items():
        if "persistence" not in by or metric in ("action_change_frames",) or metric.startswith("loss"):
            continue
        better = (
            by["model"] < by["persistence"] if lower_is_better(metric) else by["model"] > by["persistence"]
        )
        rows.append(
            dict(
                run=name,
                check=f"teacher-forced {metric}",
                model=by["model"],
                baseline=by["persistence"],
                target="beats persistence",
                met=better,
            )
        )
    rollout = report.rollout
    last = str(rollout.steps[-1])
    position = rollout.at_steps["position"][last]
    rows.append(reference_row(name, f"rollout position error @ step {last}", position, REFERENCE_ROLLOUT[60]))
    rows.append(
        dict(
            run=name,
            check=f"rollout position error @ step {last} vs persistence",
            model=position["model"],
            baseline=position["persistence"],
            target="< persistence",
            met=position["model"] < position["persistence"],
        )
    )
    from_start = report.rollout_from_game_start
    for step in [s for s in REFERENCE_ROLLOUT if from_start and s in from_start.report_steps]:
        check = f"from game start ({from_start.num_starts} games) @ step {step}"
        rows.append(
            reference_row(name, check, from_start.at_steps["position"][str(step)], REFERENCE_ROLLOUT[step])
        )
    return rows


def policy_rows(name: str, report) -> list[dict]:
    rows = []
    for metric in ("stick_mae", "shoulder_mae", "button_acc", "button_f1", "loss/buttons"):
        by = report.teacher_forced[metric]
        better = (
            by["model"] < by["copy_previous"]
            if lower_is_better(metric)
            else by["model"] > by["copy_previous"]
        )
        rows.append(
            dict(
                run=name,
                check=metric,
                model=by["model"],
                baseline=by["copy_previous"],
                target="beats copy-previous",
                met=better,
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default="/tmp/meleewm-quality", help="data root to parse into and train from"
    )
    parser.add_argument(
        "--replays", default=os.environ.get("MELEEWM_TEST_REPLAYS") or str(REPO.parent / "shared" / "replays")
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--starts", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="write the table and every report as JSON here")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate the newest finished run of each experiment "
        "(same --epochs) instead of training a new one",
    )
    args = parser.parse_args()

    root = DataRoot(Path(args.data))
    prepare(root, Path(args.replays))
    overrides = {"train.epochs": args.epochs, "train.wandb": False, "train.device": args.device}
    rows, reports, timings = [], {}, {}
    for config, kind in (
        ("baseline-v22", "world"),
        ("exp-3a-full-state", "world"),
        ("exp-6a-motion-prior", "world"),
        ("exp-7c-motion-gate", "world"),
        ("exp-7d-stage-surfaces", "world"),
        ("exp-7e-transition-head", "world"),
        ("exp-7h-mirror-swap", "world"),
        ("exp-7i-flip-tables", "world"),
        ("exp-7k-blast-zones", "world"),
        ("exp-7l-air-physics", "world"),
        ("exp-7m-hurtbox", "world"),
        ("exp-7n-hit-tables", "world"),
        ("exp-7o-landings", "world"),
        ("exp-7r-ground-friction", "world"),
        ("exp-7u-entry-platform", "world"),
        ("policy-v22", "policy"),
    ):
        experiment = load_experiment(REPO / "experiments" / f"{config}.yaml", overrides)
        started = time.perf_counter()
        run_dir = newest_finished_run(root, experiment) if args.reuse else None
        if run_dir is None:
            trainer = train_policy_run if kind == "policy" else train_run
            run_dir = trainer(experiment, root, progress=False).run_dir
            timings[config] = {"train_s": round(time.perf_counter() - started, 1)}
        else:
            timings[config] = {"train_s": None, "reused": str(run_dir)}
        started = time.perf_counter()
        report = evaluate_run(
            run_dir, root, steps=args.steps, starts=args.starts, device=args.device, progress=False
        )
        timings[config]["eval_s"] = round(time.perf_counter() - started, 1)
        reports[config] = json.loads(report.model_dump_json())
        rows += policy_rows(config, report) if kind == "policy" else world_rows(config, report)
        trained = (
            "reused"
            if args.reuse and timings[config]["train_s"] is None
            else f"trained in {timings[config]['train_s']}s"
        )
        print(f"{config}: {trained}, evaluated in {timings[config]['eval_s']}s -> {run_dir}", flush=True)

    print(f"\n{'run':<23}{'check':<52}{'model':>11}{'baseline':>11}  target / met")
    for row in rows:
        print(
            f"{row['run']:<23}{row['check']:<52}{row['model']:>11.5f}{row['baseline']:>11.5f}  "
            f"{row['target']} / {'yes' if row['met'] else 'NO'}"
        )
    machine = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "timings": timings,
                    "machine": machine,
                    "epochs": args.epochs,
                    "reports": reports,
                },
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
