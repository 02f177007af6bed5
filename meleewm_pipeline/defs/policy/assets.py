"""The imitation policy: ``policy`` (next frame's controllers from the context, off the same shards)."""

import dagster as dg
from pydantic import Field

from meleewm_pipeline.defs.resources import MeleeDataResource
from meleewm_pipeline.defs.shards.assets import encoded_shards
from meleewm_pipeline.defs.train.config import ExperimentRunConfig
from meleewm_pipeline.metadata import md_table

# Validation metrics shown in the UI beside copy-previous ("press what was held last frame").
POLICY_METRICS = ("stick_mae", "shoulder_mae", "button_acc", "button_f1")


class PolicyRunConfig(ExperimentRunConfig):
    experiment: str = Field("policy-v22", description="experiment name: experiments/<name>.yaml")


@dg.asset(
    deps=[encoded_shards],
    pool="gpu",
    group_name="training",
    kinds={"pytorch"},
    description="An imitation policy checkpoint: predicts each player's next controller from the last frames.",
)
def policy(
    context: dg.AssetExecutionContext, config: PolicyRunConfig, melee: MeleeDataResource
) -> dg.MaterializeResult:
    from meleewm_core.policy import train_policy_run

    experiment = config.load(melee.experiment_path(config.experiment))
    result = train_policy_run(experiment, melee.root(), dagster_run_id=context.run.run_id, progress=False)
    metrics = result.metrics
    rows = [
        {
            "metric": name,
            "policy": f"{metrics[name]:.5f}",
            "copy_previous": f"{metrics[f'baseline/{name}']:.5f}",
        }
        for name in POLICY_METRICS
        if name in metrics and f"baseline/{name}" in metrics
    ]
    game_md5s = result.manifest.get("game_md5s", {})
    return dg.MaterializeResult(
        metadata={
            "run_dir": dg.MetadataValue.path(str(result.run_dir)),
            "run_manifest": dg.MetadataValue.path(str(result.run_dir / "manifest.json")),
            "best_checkpoint": dg.MetadataValue.path(str(result.best_checkpoint)),
            "experiment": dg.MetadataValue.text(experiment.name),
            "games": dg.MetadataValue.int(sum(len(md5s) for md5s in game_md5s.values())),
            "validation_vs_copy_previous": md_table(rows, ["metric", "policy", "copy_previous"]),
        }
    )
