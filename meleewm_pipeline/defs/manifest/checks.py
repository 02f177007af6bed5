"""Blocking check: the manifest is unique by MD5 and every row points at a real parsed game."""

import dagster as dg

from meleewm_pipeline.defs.manifest.assets import replay_manifest
from meleewm_pipeline.defs.resources import MeleeDataResource
from meleewm_pipeline.metadata import md_table


@dg.asset_check(
    asset=replay_manifest,
    blocking=True,
    description="One row per MD5, every eligible game has frames and a parquet file, every row a source; else no training.",
)
def replay_manifest_unique_and_sane(melee: MeleeDataResource) -> dg.AssetCheckResult:
    import polars as pl

    from meleewm_core.manifest import read_manifest

    root = melee.root()
    manifest = read_manifest(root)
    problems = []
    duplicated = manifest.filter(pl.col("md5").is_duplicated())["md5"].unique().to_list()
    problems += [{"md5": md5, "problem": "md5 appears more than once"} for md5 in duplicated]
    for row in manifest.select("md5", "num_frames", "sources", "eligible").iter_rows(named=True):
        # Ineligible rows may be metadata only (frames unreadable); training reads eligible rows.
        if row["eligible"] and not root.game_path(row["md5"]).is_file():
            problems.append(
                {"md5": row["md5"], "problem": f"eligible but {root.game_path(row['md5'])} is missing"}
            )
        if row["eligible"] and not (row["num_frames"] or 0) > 0:
            problems.append({"md5": row["md5"], "problem": f"eligible with num_frames {row['num_frames']}"})
        if not row["sources"]:
            problems.append({"md5": row["md5"], "problem": "no source"})
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"games": manifest.height, "problems": md_table(problems, ["md5", "problem"])},
    )
