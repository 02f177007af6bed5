"""Parse each source's replays into per-replay parquet files: ``parsed_replays`` (partitioned by source)."""

import dagster as dg

from meleewm_core.ingest import source_replay_files
from meleewm_pipeline.defs.partitions import source_backfill_policy, source_partitions
from meleewm_pipeline.defs.raw.assets import extracted_replays
from meleewm_pipeline.defs.resources import MeleeDataResource
from meleewm_pipeline.metadata import md_table


@dg.asset(
    deps=[extracted_replays],
    partitions_def=source_partitions,
    backfill_policy=source_backfill_policy,
    group_name="ingest",
    kinds={"python", "parquet"},
    description="One parquet file per replay (games/<md5>.parquet) and a ledger row per file; parsed ones are skipped.",
)
def parsed_replays(context: dg.AssetExecutionContext, melee: MeleeDataResource) -> dg.MaterializeResult:
    from meleewm_core.parse import PARSER_VERSION, parse_paths

    root = melee.root()
    totals: dict[str, int] = {}
    per_source, failures = [], []
    for key in context.partition_keys:
        files = source_replay_files(melee.source(key), root)
        summary = parse_paths(files, root, source=key, workers=melee.parse_workers, progress=False)
        counts = {name: value for name, value in summary.model_dump().items() if isinstance(value, int)}
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
        per_source.append({"source": key, "files": len(files), **counts})
        failures += [
            {"source": key, "file": failure.path, "error": failure.error_class, "message": failure.message}
            for failure in summary.failures
        ]
        context.log.info(f"{key}: {counts}")
    columns = ["source", "files", *sorted({k for row in per_source for k in row} - {"source", "files"})]
    return dg.MaterializeResult(
        metadata={
            **{name: dg.MetadataValue.int(value) for name, value in sorted(totals.items())},
            "failed": dg.MetadataValue.int(len(failures)),
            "per_source": md_table(per_source, columns),
            "failures": md_table(failures, ["source", "file", "error", "message"]),
            "parser_version": dg.MetadataValue.text(PARSER_VERSION),
            "games_dir": dg.MetadataValue.path(str(root.games_dir)),
            "ledger": dg.MetadataValue.path(str(root.ledger_path)),
        }
    )
