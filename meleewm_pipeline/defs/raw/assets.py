"""Download and unpack each source: ``raw_archive`` -> ``extracted_replays`` (partitioned by source)."""

import dagster as dg

from meleewm_core.archives import CorruptArchiveError, UnsafeArchiveError
from meleewm_core.download import ChecksumMismatchError, DownloadError, fetch_source
from meleewm_core.ingest import unpack_source
from meleewm_core.sources import SourcesFileError
from meleewm_pipeline.defs.partitions import source_backfill_policy, source_partitions
from meleewm_pipeline.defs.resources import MeleeDataResource
from meleewm_pipeline.metadata import md_table

# The run log gets a progress line every this many percent of a download.
PROGRESS_STEP_PERCENT = 10


def _progress_logger(context: dg.AssetExecutionContext, source: str):
    last_logged = [-PROGRESS_STEP_PERCENT]

    def report(done_bytes: int, total_bytes: int | None) -> None:
        if not total_bytes:
            return
        percent = 100 * done_bytes // total_bytes
        if percent >= last_logged[0] + PROGRESS_STEP_PERCENT or done_bytes == total_bytes:
            last_logged[0] = percent
            context.log.info(f"{source}: downloaded {done_bytes:,} of {total_bytes:,} bytes ({percent}%)")

    return report


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=source_backfill_policy,
    group_name="ingest",
    kinds={"python"},
    description="The source's archive on local disk: downloaded (resumable, checksummed) or found in place.",
)
def raw_archive(context: dg.AssetExecutionContext, melee: MeleeDataResource) -> dg.MaterializeResult:
    root = melee.root()
    rows = []
    for key in context.partition_keys:
        try:
            source = melee.source(key)
            fetched = fetch_source(source, root, progress=_progress_logger(context, key))
        except (KeyError, SourcesFileError, ChecksumMismatchError, DownloadError, FileNotFoundError) as error:
            raise dg.Failure(description=f"source {key!r}: {error}") from error
        download = fetched.download
        context.log.info(f"{key}: {fetched.kind} source at {fetched.path} ({fetched.size_bytes:,} bytes)")
        rows.append(
            {
                "source": key,
                "kind": fetched.kind,
                "path": str(fetched.path),
                "bytes": fetched.size_bytes,
                "sha256": fetched.sha256 or "",
                "downloaded_bytes": download.downloaded_bytes if download else 0,
                "resumed_from_bytes": download.resumed_from_bytes if download else 0,
                "url": source.url or "",
            }
        )
    metadata = {
        "sources": md_table(
            rows, ["source", "kind", "bytes", "downloaded_bytes", "resumed_from_bytes", "sha256", "path"]
        ),
        "bytes": dg.MetadataValue.int(sum(r["bytes"] for r in rows)),
        "downloaded_bytes": dg.MetadataValue.int(sum(r["downloaded_bytes"] for r in rows)),
    }
    if len(rows) == 1:
        metadata["path"] = dg.MetadataValue.path(rows[0]["path"])
        metadata["url"] = dg.MetadataValue.text(rows[0]["url"])
        if rows[0]["sha256"]:
            metadata["sha256"] = dg.MetadataValue.text(rows[0]["sha256"])
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    deps=[raw_archive],
    partitions_def=source_partitions,
    backfill_policy=source_backfill_policy,
    group_name="ingest",
    kinds={"python"},
    description="The source's .slp files, safely extracted from its archive (or its folder, read in place).",
)
def extracted_replays(context: dg.AssetExecutionContext, melee: MeleeDataResource) -> dg.MaterializeResult:
    root = melee.root()
    rows, archive_rows = [], []
    for key in context.partition_keys:
        source = melee.source(key)
        try:
            unpacked = unpack_source(fetch_source(source, root, verified=True), root)
        except UnsafeArchiveError as error:
            raise dg.Failure(description=f"source {key!r}: unsafe archive: {error}") from error
        except (CorruptArchiveError, OSError) as error:
            # A corrupt archive fails this source's partition only; other sources are untouched.
            raise dg.Failure(
                description=f"source {key!r}: cannot extract: {type(error).__name__}: {error}"
            ) from error
        context.log.info(f"{key}: {len(unpacked.replay_files)} replays, {unpacked.replay_bytes:,} bytes")
        rows.append({"source": key, "replays": len(unpacked.replay_files), "bytes": unpacked.replay_bytes})
        for extraction in unpacked.extractions:
            archive_rows.append(
                {
                    "source": key,
                    "archive": extraction["archive"],
                    "extracted": extraction["extracted"],
                    "already_present": extraction["already_present"],
                    "ignored_entries": extraction["ignored_entries"],
                    "expanded_bytes": extraction["expanded_bytes"],
                    "refused_entries": "; ".join(
                        f"{r['entry']} ({r['reason']})" for r in extraction["refused_entries"]
                    ),
                }
            )
    return dg.MaterializeResult(
        metadata={
            "replays": dg.MetadataValue.int(sum(r["replays"] for r in rows)),
            "bytes": dg.MetadataValue.int(sum(r["bytes"] for r in rows)),
            "per_source": md_table(rows, ["source", "replays", "bytes"]),
            "archives": md_table(
                archive_rows,
                [
                    "source",
                    "archive",
                    "extracted",
                    "already_present",
                    "ignored_entries",
                    "expanded_bytes",
                    "refused_entries",
                ],
            ),
        }
    )
