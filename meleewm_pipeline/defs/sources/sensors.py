"""The sensor that turns a new source into a partition and an ingest run.

A source is new when its name is not yet a ``source`` partition: an entry added to the sources
file, or an archive or folder dropped into ``<data>/inbox``. The cursor records every source the
sensor has requested a run for, so a source is requested once, even if its partition is later
deleted and re-added by hand. A manual source gets its partition at once but its run only when
its folder ``raw/<name>/`` has files.
"""

import json

import dagster as dg

from meleewm_core.sources import SourceConfig
from meleewm_core.store import DataRoot
from meleewm_pipeline.defs.partitions import source_partitions
from meleewm_pipeline.defs.resources import MeleeDataResource

SENSOR_INTERVAL_S = 60


def _ready(source: SourceConfig, root: DataRoot) -> bool:
    """A manual source is ready once a person has put files into raw/<name>/."""
    if source.kind != "manual":
        return True
    folder = root.source_raw_dir(source.name)
    return folder.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in folder.rglob("*"))


@dg.sensor(
    job_name="ingest_job",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Adds a `source` partition and requests its ingest when a source appears in the sources file or the inbox.",
)
def source_sensor(context: dg.SensorEvaluationContext, melee: MeleeDataResource) -> dg.SensorResult:
    requested: set[str] = set(json.loads(context.cursor)["requested"]) if context.cursor else set()
    existing = set(context.instance.get_dynamic_partitions(source_partitions.name))
    root = melee.root()
    sources = melee.sources()
    new_partitions = [s.name for s in sources if s.name not in existing]
    to_request = [s.name for s in sources if s.name not in requested and _ready(s, root)]
    run_requests = [
        dg.RunRequest(run_key=f"ingest-{name}", partition_key=name, tags={"meleewm/trigger": "source_sensor"})
        for name in to_request
    ]
    if new_partitions or to_request:
        context.log.info(f"new partitions: {new_partitions}; ingest requested for: {to_request}")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[source_partitions.build_add_request(new_partitions)]
        if new_partitions
        else [],
        cursor=json.dumps({"requested": sorted(requested | set(to_request))}),
        skip_reason=None if (run_requests or new_partitions) else "no new source",
    )
