"""Encoded tensors of the experiment's games (``train.games``: eligible by default), ready for training: ``encoded_shards``."""

import dagster as dg

from meleewm_pipeline.defs.manifest.assets import replay_manifest
from meleewm_pipeline.defs.resources import MeleeDataResource
from meleewm_pipeline.defs.train.config import ExperimentRunConfig


@dg.asset(
    deps=[replay_manifest],
    group_name="training",
    kinds={"python", "numpy"},
    description="The experiment's games (train.games: eligible by default) encoded as memory-mappable tensors (shards/<encoding-id>/), split by game.",
)
def encoded_shards(
    context: dg.AssetExecutionContext, config: ExperimentRunConfig, melee: MeleeDataResource
) -> dg.MaterializeResult:
    from meleewm_core.shards import encode_experiment_shards

    experiment = config.load(melee.experiment_path(config.experiment))
    shard_set = encode_experiment_shards(melee.root(), experiment, progress=False)
    context.log.info(f"{shard_set.num_games} games, {shard_set.num_frames:,} frames in {shard_set.path}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(shard_set.path)),
            "encoding_id": dg.MetadataValue.text(shard_set.encoding_id),
            "experiment": dg.MetadataValue.text(experiment.name),
            "games": dg.MetadataValue.int(shard_set.num_games),
            "frames": dg.MetadataValue.int(shard_set.num_frames),
            "train_games": dg.MetadataValue.int(len(shard_set.train_md5s)),
            "val_games": dg.MetadataValue.int(len(shard_set.val_md5s)),
            "new_games": dg.MetadataValue.int(shard_set.new_games),
            "skipped_games": dg.MetadataValue.int(len(shard_set.skipped)),
            "data_fingerprint": dg.MetadataValue.text(shard_set.data_fingerprint),
            "out_of_vocab_values": dg.MetadataValue.json(shard_set.anomalies),
        }
    )
