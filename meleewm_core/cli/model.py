"""``meleewm encode`` and ``meleewm train``: manifest -> tensor shards -> a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

from meleewm_core.store import DataRoot

TRAIN_EPILOG = """\
examples:
  meleewm train --config experiments/baseline-v22.yaml
  meleewm train --config experiments/exp-3a-full-state.yaml --epochs 3 --batch-size 512
  meleewm train --config experiments/baseline-v22.yaml --resume data/runs/baseline-v22/<run-id>/final.pt --epochs 6
  meleewm train --config experiments/exp-6a-motion-prior.yaml --set train.games=two_players --set train.rollout_steps=4

The run folder is <data>/runs/<experiment>/<run-id>/ (best.pt, final.pt, manifest.json, wandb/).
Shards missing for the experiment's encoding are encoded first. wandb runs offline into the run
folder unless WANDB_API_KEY is set; --no-wandb turns it off.
"""


def _format_anomalies(anomalies: dict) -> str:
    if not anomalies:
        return "none"
    return "; ".join(
        f"{field}: " + ", ".join(f"{kind}={count}" for kind, count in sorted(kinds.items()))
        for field, kinds in sorted(anomalies.items())
    )


def run_encode(args: argparse.Namespace) -> int:
    from meleewm_core.config import ConfigError, load_experiment
    from meleewm_core.encoding import EncodingError
    from meleewm_core.shards import ShardError, encode_experiment_shards

    root = DataRoot.from_env(args.data)
    try:
        experiment = load_experiment(args.config, {"train.max_games": args.max_games})
        shard_set = encode_experiment_shards(root, experiment, progress=not args.quiet)
    except (ConfigError, EncodingError, ShardError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"shards: {shard_set.path}")
    print(
        f"games: {shard_set.num_games} ({len(shard_set.train_md5s)} train, {len(shard_set.val_md5s)} val), "
        f"frames: {shard_set.num_frames:,}, new this run: {shard_set.new_games} in {shard_set.seconds:.1f}s"
    )
    print(f"data fingerprint: {shard_set.data_fingerprint}")
    print(f"anomalies (mapped by rule, counted): {_format_anomalies(shard_set.anomalies)}")
    for md5, reason in sorted(shard_set.skipped.items()):
        print(f"skipped {md5}: {reason}")
    return 0


def training_overrides(args: argparse.Namespace) -> dict:
    """The experiment keys the training flags of ``add_training_arguments`` override."""
    from meleewm_core.config import parse_assignments

    return {
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.max_games": args.max_games,
        "train.device": args.device,
        "train.wandb": False if args.no_wandb else None,
        **parse_assignments(args.set),
    }


def add_training_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    parser.add_argument("--data", help="data root (default $MELEEWM_DATA or ./data)")
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--batch-size", type=int, help="override train.batch_size")
    parser.add_argument("--max-games", type=int, help="train on the first N games (by MD5)")
    parser.add_argument("--device", help="auto (default), cuda, mps or cpu")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to wandb")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any experiment field by its dotted key, read as YAML "
        "(repeatable), e.g. --set train.games=two_players --set model.dropout=0.3",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or tables")


def run_train(args: argparse.Namespace) -> int:
    from meleewm_core.config import ConfigError, load_experiment
    from meleewm_core.data import ShapeError
    from meleewm_core.encoding import EncodingError
    from meleewm_core.shards import ShardError
    from meleewm_core.train import NonFiniteLossError, train_run

    root = DataRoot.from_env(args.data)
    try:
        experiment = load_experiment(args.config, training_overrides(args))
        result = train_run(experiment, root, resume=args.resume, progress=not args.quiet)
    except (
        ConfigError,
        EncodingError,
        ShardError,
        ShapeError,
        NonFiniteLossError,
        FileNotFoundError,
        ValueError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"run: {result.run_dir}")
    print(f"best: {result.best_checkpoint}  final: {result.final_checkpoint}")
    headline = {
        k: result.metrics.get(k) for k in ("action_acc", "action_change_acc", "position_mae", "damage_mae")
    }
    print("validation: " + json.dumps(headline))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    encode = subparsers.add_parser("encode", help="encode the manifest's eligible games into tensor shards")
    encode.add_argument("--data", help="data root (default $MELEEWM_DATA or ./data)")
    encode.add_argument("--config", required=True, help="experiment YAML (its encoding section is used)")
    encode.add_argument("--max-games", type=int, help="encode at most the first N eligible games (by MD5)")
    encode.add_argument("--quiet", action="store_true", help="no progress bar")
    encode.set_defaults(run=run_encode)

    train = subparsers.add_parser(
        "train",
        help="train a world model from an experiment YAML",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_training_arguments(train, "experiment YAML under experiments/")
    train.add_argument("--resume", help="checkpoint to continue from (its epoch and step)")
    train.set_defaults(run=run_train)
