"""Evaluation of the latest trained checkpoint: ``model_evaluation``."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from meleewm_pipeline.defs.resources import MeleeDataResource
from meleewm_pipeline.defs.train.assets import world_model


class EvaluationConfig(dg.Config):
    steps: int = Field(60, description="rollout length in frames")
    starts: int = Field(64, description="rollout start points drawn from the validation games")
    game_start_steps: int = Field(
        500,
        description="frames rolled out from each validation game's start (the reference's protocol); 0 skips",
    )


@dg.asset(
    deps=[world_model],
    group_name="training",
    kinds={"pytorch"},
    description="Teacher-forced and rollout metrics of the latest checkpoint next to persistence, with plots.",
)
def model_evaluation(
    context: dg.AssetExecutionContext, config: EvaluationConfig, melee: MeleeDataResource
) -> dg.MaterializeResult:
    from meleewm_core.eval import evaluate_run

    event = context.instance.get_latest_materialization_event(world_model.key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(description="world_model has no materialization yet: materialize it first")
    run_dir = Path(event.asset_materialization.metadata["run_dir"].value)
    report = evaluate_run(
        run_dir,
        melee.root(),
        steps=config.steps,
        starts=config.starts,
        game_start_steps=config.game_start_steps,
    )
    eval_dir = run_dir / "eval"
    # The flat headline fields of the report (position_mae, action_acc, ... and their persistence twins).
    summary = {
        key: value
        for key, value in report.model_dump().items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return dg.MaterializeResult(
        metadata={
            "run_dir": dg.MetadataValue.path(str(run_dir)),
            "report_json": dg.MetadataValue.path(str(eval_dir / "report.json")),
            "report_md": dg.MetadataValue.path(str(eval_dir / "report.md")),
            "report": dg.MetadataValue.md((eval_dir / "report.md").read_text()[:20000])
            if (eval_dir / "report.md").is_file()
            else dg.MetadataValue.text("no report.md written"),
            **{
                f"plot_{name}": dg.MetadataValue.path(str(path))
                for name, path in sorted(report.plots.items())
            },
            **{key: dg.MetadataValue.float(float(value)) for key, value in summary.items()},
        }
    )
