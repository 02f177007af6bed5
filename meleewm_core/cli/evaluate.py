"""``meleewm eval``, ``meleewm train-policy``, ``meleewm simulate``: numbers people can trust."""

from __future__ import annotations

import argparse
import json
import sys

from meleewm_core.cli.model import add_training_arguments, training_overrides
from meleewm_core.store import DataRoot

EVAL_EPILOG = """\
examples:
  meleewm eval data/runs/baseline-v22/<run-id>
  meleewm eval data/runs/exp-3a-full-state/<run-id> --steps 60 --starts 128
  meleewm eval data/runs/exp-3a-full-state/<run-id> --game-start-steps 0   # skip the from-game-start rollouts
  meleewm eval data/runs/policy-v22/<run-id>          # a policy run: against copy-previous

Writes <run>/eval/report.json, report.md and PNG plots. Only the run's validation games
(manifest.json game_md5s.val) are used, with the checkpoint's own model and encoding config.
Rollouts run from --starts points spread over those games and, as the reference implementation's
figures did, from each game's start (its countdown as context) for --game-start-steps frames.
"""

SIMULATE_EPILOG = """\
example:
  meleewm simulate data/runs/exp-3a-full-state/<run-id> --policy data/runs/policy-v22/<run-id> --frames 600

Writes <world-run>/simulate/<policy-run-id>-<game>-<row>-<sampled<seed>/greedy>.parquet (simulated and real
trajectories) and a .png beside it. The world model needs full_state heads; both runs need the same encoding.
"""


def _errors():
    from meleewm_core.data import ShapeError
    from meleewm_core.eval import EvalError
    from meleewm_core.shards import ShardError

    return (EvalError, ShardError, ShapeError, FileNotFoundError, ValueError)


def run_eval(args: argparse.Namespace) -> int:
    from meleewm_core.eval import evaluate_run

    try:
        report = evaluate_run(
            args.run_dir,
            DataRoot.from_env(args.data),
            steps=args.steps,
            starts=args.starts,
            device=args.device,
            game_start_steps=args.game_start_steps,
            progress=not args.quiet,
        )
    except _errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = report.run_dir / "eval"
    if report.kind == "policy":
        print(
            f"policy: stick MAE {report.stick_mae:.4f} (copy-previous {report.stick_mae_copy_previous:.4f}), "
            f"button acc {report.button_acc:.4f} (copy-previous {report.button_acc_copy_previous:.4f})"
        )
    else:
        print(
            f"teacher-forced position MAE {report.position_mae:.3f} (persistence {report.position_mae_persistence:.3f}), "
            f"action acc {report.action_acc:.4f} (persistence {report.action_acc_persistence:.4f})"
        )
        print(
            f"rollout step {report.rollout_last_step}: position error {report.rollout_position_error:.2f} "
            f"(persistence {report.rollout_position_error_persistence:.2f}, constant velocity "
            f"{report.rollout_position_error_constant_velocity:.2f})"
        )
        if report.rollout_from_game_start is not None:
            games = report.rollout_from_game_start.num_starts
            print(
                f"from the start of {games} validation game(s): position error "
                f"{report.game_start_position_error:.2f} at step {min(report.rollout_last_step, report.game_start_steps)} "
                f"(constant velocity {report.game_start_position_error_constant_velocity:.2f}), "
                f"{report.game_start_position_error_last:.2f} at step {report.game_start_steps}"
            )
        elif report.game_start_steps:
            print(f"no validation game is long enough for {report.game_start_steps} steps from its start")
    print(f"report: {out / 'report.md'}  plots: {', '.join(p.name for p in report.plots.values())}")
    return 0


def run_train_policy(args: argparse.Namespace) -> int:
    from meleewm_core.config import ConfigError, load_experiment
    from meleewm_core.policy import train_policy_run

    try:
        experiment = load_experiment(args.config, training_overrides(args))
        result = train_policy_run(experiment, DataRoot.from_env(args.data), progress=not args.quiet)
    except (ConfigError, *_errors()) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"run: {result.run_dir}")
    keys = (
        "stick_mae",
        "baseline/stick_mae",
        "button_acc",
        "baseline/button_acc",
        "button_f1",
        "baseline/button_f1",
    )
    print("validation: " + json.dumps({k: round(result.metrics[k], 5) for k in keys}))
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    from meleewm_core.simulate import simulate

    try:
        result = simulate(
            args.run_dir,
            args.policy,
            DataRoot.from_env(args.data),
            frames=args.frames,
            game=args.game,
            start_row=args.start_row,
            sample_buttons=not args.greedy_buttons,
            seed=args.seed,
            device=args.device,
        )
    except _errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    death = f"frame {result.first_predicted_death}" if result.first_predicted_death else "none"
    print(
        f"simulated {result.frames} frames from game {result.game_md5[:8]} row {result.start_row}; "
        f"first predicted death: {death}; largest |x| {result.left_stage_x:.1f}; "
        f"lowest percent {result.lowest_percent:.1f}"
    )
    print(f"trajectory: {result.trajectory}\nplot: {result.plot}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data_help = "data root (default $MELEEWM_DATA or ./data)"
    evaluate = subparsers.add_parser(
        "eval",
        help="evaluate a run on its validation games, with baselines and plots",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("run_dir", help="run folder runs/<experiment>/<run-id>/")
    evaluate.add_argument("--data", help=data_help)
    evaluate.add_argument("--steps", type=int, default=60, help="rollout length in frames (default 60)")
    evaluate.add_argument(
        "--starts", type=int, default=64, help="rollout start points over the validation games"
    )
    evaluate.add_argument(
        "--game-start-steps",
        type=int,
        default=500,
        help="also roll out this many frames from each validation game's start, as the reference "
        "implementation measured (default 500; 0 skips)",
    )
    evaluate.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=run_eval)

    policy = subparsers.add_parser(
        "train-policy", help="train the imitation policy (next frame's controllers)"
    )
    add_training_arguments(policy, "policy experiment YAML, e.g. experiments/policy-v22.yaml")
    policy.set_defaults(run=run_train_policy)

    sim = subparsers.add_parser(
        "simulate",
        help="world model + policy play from a real start state",
        epilog=SIMULATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument("run_dir", help="world-model run folder (full_state heads)")
    sim.add_argument("--policy", required=True, help="policy run folder")
    sim.add_argument("--data", help=data_help)
    sim.add_argument("--frames", type=int, default=600, help="frames to simulate (default 600)")
    sim.add_argument("--game", help="validation game MD5 (or prefix) to start from (default: the first)")
    sim.add_argument("--start-row", type=int, help="first simulated frame row of that game (default 600)")
    sim.add_argument(
        "--greedy-buttons", action="store_true", help="threshold button probabilities instead of sampling"
    )
    sim.add_argument("--seed", type=int, default=0, help="seed of the button sampling")
    sim.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    sim.set_defaults(run=run_simulate)
