"""Retraining: every week, and whenever the manifest has grown by enough eligible games."""

import json

import dagster as dg

from meleewm_pipeline.defs.manifest.assets import replay_manifest
from meleewm_pipeline.defs.resources import AutomationSettings

weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain_schedule",
    job_name="retrain_job",
    cron_schedule="0 4 * * 1",  # Mondays 04:00, after the weekend's tournaments have landed
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrains the world model on the current manifest every Monday at 04:00 UTC.",
)


@dg.sensor(
    job_name="retrain_job",
    name="manifest_growth_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a retraining when the manifest has gained enough eligible games since the last one.",
)
def manifest_growth_sensor(context: dg.SensorEvaluationContext, automation: AutomationSettings):
    """The cursor holds the eligible-game count at the last retraining this sensor requested."""
    event = context.instance.get_latest_materialization_event(replay_manifest.key)
    if event is None or event.asset_materialization is None:
        return dg.SkipReason("replay_manifest has not been materialized yet")
    eligible = int(event.asset_materialization.metadata["eligible_games"].value)
    trained_at = json.loads(context.cursor)["eligible_at_last_retrain"] if context.cursor else 0
    grown = eligible - trained_at
    if grown < automation.retrain_min_new_eligible_games:
        return dg.SkipReason(
            f"{grown} new eligible games since the last retraining, "
            f"{automation.retrain_min_new_eligible_games} needed"
        )
    context.update_cursor(json.dumps({"eligible_at_last_retrain": eligible}))
    return dg.RunRequest(
        run_key=f"retrain-at-{eligible}-eligible-{event.timestamp:.0f}",
        tags={"meleewm/trigger": "manifest_growth", "meleewm/eligible_games": str(eligible)},
    )
