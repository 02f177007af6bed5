"""Headless `make run`: materialize the whole graph for the default local source, in order.

    python -m meleewm_pipeline.run_all [--experiment NAME] [--source NAME] [--epochs N] ...

Runs against the Dagster instance in ``DAGSTER_HOME`` (default: the repository's ``dagster_home/``),
so every materialization shows up in the UI afterwards (`make ui`). Honours ``MELEEWM_DATA`` (data
root), ``MELEEWM_REPLAYS`` (the local replay folder, default ``~/Slippi``) and ``MELEEWM_SOURCES``.
Ends by printing where the checkpoint and its evaluation are.
"""

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _latest(instance, asset: str) -> dict:
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return {}
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def main(argv: list[str] | None = None) -> int:
    from meleewm_pipeline.defs.train.config import DEFAULT_EXPERIMENT

    parser = argparse.ArgumentParser(
        prog="python -m meleewm_pipeline.run_all", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--source", default="local", help="source partition to ingest (default: local)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiments/<name>.yaml")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--max-games", type=int, help="override train.max_games")
    parser.add_argument("--device", help="override train.device (auto, cpu, cuda)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to Weights & Biases")
    args = parser.parse_args(argv)

    os.environ.setdefault("DAGSTER_HOME", str(REPO / "dagster_home"))
    # Dagster refuses a DAGSTER_HOME that does not exist yet; a fresh one named by the user is
    # made here (with Dagster's default instance settings).
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    import dagster as dg

    from meleewm_core.store import MissingFolderError, default_replay_folder
    from meleewm_pipeline.definitions import build_definitions

    if args.source == "local":
        try:
            default_replay_folder()
        except MissingFolderError as error:
            print(f"make run: {error}", file=sys.stderr)
            return 2
    defs = build_definitions()
    instance = dg.DagsterInstance.get()
    if not instance.has_dynamic_partition("source", args.source):
        instance.add_dynamic_partitions("source", [args.source])
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

    print(f"ingest {args.source!r} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})", flush=True)
    ingest = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, partition_key=args.source, run_config=quiet, raise_on_error=False
    )
    if not ingest.success:
        print(f"ingest_job failed (run {ingest.run_id}); see the run in `make ui`", file=sys.stderr)
        return 1

    training = {
        "experiment": args.experiment,
        "epochs": args.epochs,
        "max_games": args.max_games,
        "device": args.device,
        "wandb": False if args.no_wandb else None,
    }
    training = {key: value for key, value in training.items() if value is not None}
    assets = ["encoded_shards", "world_model", "model_evaluation"]
    ops = {"encoded_shards": {"config": training}, "world_model": {"config": training}}
    print(f"retrain: {', '.join(assets)} with experiment {args.experiment!r}", flush=True)
    retrain = defs.resolve_job_def("retrain_job").execute_in_process(
        instance=instance,
        run_config={**quiet, "ops": ops},
        asset_selection=[dg.AssetKey(name) for name in assets],
        raise_on_error=False,
    )
    if not retrain.success:
        print(f"retrain_job failed (run {retrain.run_id}); see the run in `make ui`", file=sys.stderr)
        return 1

    manifest, trained, evaluation = (
        _latest(instance, name) for name in ("replay_manifest", "world_model", "model_evaluation")
    )
    print()
    print(
        f"games: {manifest.get('games')} ({manifest.get('eligible_games')} eligible), manifest {manifest.get('manifest')}"
    )
    print(f"checkpoint: {trained.get('best_checkpoint')}")
    print(f"run manifest: {trained.get('run_manifest')}")
    print(f"evaluation: {evaluation.get('report_md')}")
    print("browse it all: make ui  (http://127.0.0.1:3000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
