"""The de-duplicated table of every parsed game across all sources: ``replay_manifest``."""

import dagster as dg

from meleewm_pipeline.defs.parse.assets import parsed_replays
from meleewm_pipeline.defs.resources import MeleeDataResource
from meleewm_pipeline.metadata import md_table


@dg.asset(
    deps=[parsed_replays],
    group_name="ingest",
    kinds={"python", "parquet"},
    description="One row per distinct game (by MD5) over every source, with eligibility for training and its reason.",
)
def replay_manifest(context: dg.AssetExecutionContext, melee: MeleeDataResource) -> dg.MaterializeResult:
    import polars as pl

    from meleewm_core.manifest import build_manifest, read_manifest
    from meleewm_core.shards import data_fingerprint

    root = melee.root()
    summary = build_manifest(root)
    manifest = read_manifest(root)
    eligible = manifest.filter(pl.col("eligible"))
    per_source = (
        manifest.explode("sources")
        .group_by("sources")
        .agg(games=pl.len(), eligible=pl.col("eligible").sum())
        .rename({"sources": "source"})
        .sort("source")
    )
    reasons = (
        manifest.filter(~pl.col("eligible"))
        .group_by("ineligible_reason")
        .agg(games=pl.len())
        .sort("games", descending=True)
    )
    context.log.info(f"manifest: {manifest.height} games, {eligible.height} eligible")
    counts = {name: value for name, value in summary.model_dump().items() if isinstance(value, int)}
    return dg.MaterializeResult(
        metadata={
            **{name: dg.MetadataValue.int(value) for name, value in sorted(counts.items())},
            "games": dg.MetadataValue.int(manifest.height),
            "eligible_games": dg.MetadataValue.int(eligible.height),
            "eligible_frames": dg.MetadataValue.int(int(eligible["num_frames"].sum() or 0)),
            "data_fingerprint": dg.MetadataValue.text(data_fingerprint(eligible["md5"].to_list())),
            "per_source": md_table(per_source.to_dicts(), ["source", "games", "eligible"]),
            "ineligible_reasons": md_table(reasons.to_dicts(), ["ineligible_reason", "games"]),
            "manifest": dg.MetadataValue.path(str(root.manifest_path)),
        }
    )
