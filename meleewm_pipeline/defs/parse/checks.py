"""Checks on parsing: a source where many replays fail to parse deserves a look (warning only)."""

import dagster as dg

from meleewm_pipeline.defs.parse.assets import parsed_replays
from meleewm_pipeline.defs.resources import AutomationSettings, MeleeDataResource
from meleewm_pipeline.metadata import md_table


@dg.asset_check(
    asset=parsed_replays,
    description="Share of each source's replays that failed to parse stays under the configured rate.",
)
def parsed_replays_failure_rate(
    melee: MeleeDataResource, automation: AutomationSettings
) -> dg.AssetCheckResult:
    import polars as pl

    from meleewm_core.parse import read_ledger

    ledger = read_ledger(melee.root())
    limit = automation.max_parse_failure_rate
    if ledger.is_empty():
        return dg.AssetCheckResult(passed=True, metadata={"sources": 0})
    per_source = (
        ledger.group_by("source")
        .agg(files=pl.len(), failed=(pl.col("status") == "failed").sum())
        .with_columns(failure_rate=pl.col("failed") / pl.col("files"))
        .sort("source")
    )
    too_many = per_source.filter(pl.col("failure_rate") > limit)
    rows = [{**row, "failure_rate": f"{row['failure_rate']:.1%}"} for row in per_source.to_dicts()]
    return dg.AssetCheckResult(
        passed=too_many.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{too_many.height} source(s) above {limit:.0%} parse failures: {', '.join(too_many['source'])}"
            if too_many.height
            else f"every source under {limit:.0%} parse failures"
        ),
        metadata={
            "per_source": md_table(rows, ["source", "files", "failed", "failure_rate"]),
            "max_failure_rate": dg.MetadataValue.float(float(per_source["failure_rate"].max())),
        },
    )
