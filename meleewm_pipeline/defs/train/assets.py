"""One training run of the world model: ``world_model`` (runs in the ``gpu`` pool, one at a time)."""

import math

import dagster as dg

from meleewm_core.lineage import run_lineage
from meleewm_pipeline.defs.resources import MeleeDataResource
from meleewm_pipeline.defs.shards.assets import encoded_shards
from meleewm_pipeline.defs.train.config import ExperimentRunConfig
from meleewm_pipeline.metadata import md_table

# Headline validation metrics shown in the UI, each beside the persistence ("repeat the last
# frame") baseline under the key "baseline/<name>".
HEADLINE_METRICS = ("action_acc", "action_change_acc", "position_mae", "damage_mae")


def _lower_is_better(name: str) -> bool:
    return name.endswith("_mae") or name.startswith("loss")


def _float_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def loss_check(metrics: dict[str, float]) -> dg.AssetCheckResult:
    losses = {k: v for k, v in metrics.items() if k == "loss" or k.startswith("loss/")}
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    return dg.AssetCheckResult(
        check_name="world_model_loss_is_finite",
        passed=bool(losses) and not bad,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"non-finite losses: {bad}"
        if bad
        else ("no loss reported" if not losses else "all losses finite"),
        metadata={k: dg.MetadataValue.float(v) for k, v in losses.items() if math.isfinite(v)},
    )


def comparison_rows(metrics: dict[str, float]) -> list[dict]:
    """One row per headline metric: the model's value beside persistence's, and who wins."""
    rows = []
    for name in HEADLINE_METRICS:
        if name not in metrics or f"baseline/{name}" not in metrics:
            continue
        model, base = metrics[name], metrics[f"baseline/{name}"]
        better = model < base if _lower_is_better(name) else model > base
        rows.append(
            {"metric": name, "model": f"{model:.4f}", "persistence": f"{base:.4f}", "model_better": better}
        )
    return rows


def baseline_check(metrics: dict[str, float]) -> dg.AssetCheckResult:
    rows = comparison_rows(metrics)
    losing = [row["metric"] for row in rows if not row["model_better"]]
    return dg.AssetCheckResult(
        check_name="world_model_beats_persistence",
        passed=bool(rows) and not losing,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"persistence is as good or better on: {', '.join(losing)}"
        if losing
        else "model beats persistence",
        metadata={"comparison": md_table(rows, ["metric", "model", "persistence", "model_better"])},
    )


@dg.asset(
    deps=[encoded_shards],
    pool="gpu",
    group_name="training",
    kinds={"pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            "world_model_loss_is_finite",
            asset="world_model",
            description="Training and validation losses are finite.",
        ),
        dg.AssetCheckSpec(
            "world_model_beats_persistence",
            asset="world_model",
            description="Validation metrics beat the repeat-the-last-frame baseline.",
        ),
    ],
    description="A trained checkpoint (best.pt, final.pt) with its run manifest listing every game it saw.",
)
def world_model(
    context: dg.AssetExecutionContext, config: ExperimentRunConfig, melee: MeleeDataResource
) -> dg.MaterializeResult:
    # torch is imported here, not at module level, so loading the definitions stays fast.
    from meleewm_core.train import train_run

    root = melee.root()
    experiment = config.load(melee.experiment_path(config.experiment))
    result = train_run(experiment, root, dagster_run_id=context.run.run_id, progress=False)
    metrics = _float_metrics(result.metrics)
    lineage = run_lineage(result.run_dir, root)
    context.log.info(f"run {result.run_dir}: {len(lineage.games)} games from {len(lineage.sources)} sources")
    headline = {name: dg.MetadataValue.float(metrics[name]) for name in HEADLINE_METRICS if name in metrics}
    headline.update(
        {
            f"persistence_{name}": dg.MetadataValue.float(metrics[f"baseline/{name}"])
            for name in HEADLINE_METRICS
            if f"baseline/{name}" in metrics
        }
    )
    return dg.MaterializeResult(
        metadata={
            "run_dir": dg.MetadataValue.path(str(result.run_dir)),
            "run_manifest": dg.MetadataValue.path(str(result.run_dir / "manifest.json")),
            "best_checkpoint": dg.MetadataValue.path(str(result.best_checkpoint)),
            "final_checkpoint": dg.MetadataValue.path(str(result.final_checkpoint)),
            "experiment": dg.MetadataValue.text(experiment.name),
            "games": dg.MetadataValue.int(len(lineage.games)),
            "train_games": dg.MetadataValue.int(sum(g.role == "train" for g in lineage.games)),
            "val_games": dg.MetadataValue.int(sum(g.role == "val" for g in lineage.games)),
            "data_fingerprint": dg.MetadataValue.text(lineage.data_fingerprint or ""),
            "sources": md_table(
                [{"source": s, "games": n} for s, n in sorted(lineage.sources.items())], ["source", "games"]
            ),
            "validation_vs_persistence": md_table(
                comparison_rows(metrics), ["metric", "model", "persistence", "model_better"]
            ),
            "loss": dg.MetadataValue.float(metrics.get("loss", float("nan"))),
            **headline,
        },
        check_results=[loss_check(metrics), baseline_check(metrics)],
    )
