"""Sensors and schedules: a new inbox archive becomes one partition and one run, once; retraining
is requested weekly and when the manifest has grown enough."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import dagster as dg
import yaml
from replay_archives import ServedArchives

from meleewm_core.download import copy_into_inbox
from meleewm_core.store import DataRoot
from meleewm_pipeline.definitions import build_definitions
from meleewm_pipeline.defs.resources import AutomationSettings, MeleeDataResource


def empty_sources_file(tmp_path: Path) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": []}))
    return path


def tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None, **resources):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = defs.resolve_sensor_def(name)(context)
    # A SensorResult carries its new cursor; a sensor that returns a request sets it on the context.
    cursor = (
        result.cursor if isinstance(result, dg.SensorResult) and result.cursor is not None else context.cursor
    )
    return result, cursor


def test_new_inbox_archive_adds_one_partition_and_one_run_once(
    tmp_path: Path, served_archives: ServedArchives
) -> None:
    root = DataRoot(tmp_path / "data")
    melee = MeleeDataResource(
        data_dir=str(root.root),
        sources_file=str(empty_sources_file(tmp_path)),
        replay_folder=str(tmp_path / "no-local"),
        parse_workers=1,
    )
    defs = build_definitions(melee)
    instance = dg.DagsterInstance.ephemeral()
    # Another source already known, never materialized: the new source's run must not touch it.
    instance.add_dynamic_partitions("source", ["older-source"])

    first, cursor = tick(defs, "source_sensor", instance, None, melee=melee)
    assert not first.run_requests and not first.dynamic_partitions_requests

    copy_into_inbox(served_archives.folder / "tournament-a.7z", root)
    second, cursor = tick(defs, "source_sensor", instance, cursor, melee=melee)
    assert [r.partition_keys for r in second.dynamic_partitions_requests] == [["inbox-tournament-a"]]
    assert [r.partition_key for r in second.run_requests] == ["inbox-tournament-a"]
    assert defs.resolve_sensor_def("source_sensor").job_name == "ingest_job"
    instance.add_dynamic_partitions("source", ["inbox-tournament-a"])

    # Later ticks request nothing again, even if a person deletes and re-adds the partition.
    third, cursor = tick(defs, "source_sensor", instance, cursor, melee=melee)
    assert not third.run_requests and not third.dynamic_partitions_requests
    instance.delete_dynamic_partition("source", "inbox-tournament-a")
    fourth, cursor = tick(defs, "source_sensor", instance, cursor, melee=melee)
    assert not fourth.run_requests
    assert [r.partition_keys for r in fourth.dynamic_partitions_requests] == [["inbox-tournament-a"]]
    instance.add_dynamic_partitions("source", ["inbox-tournament-a"])

    # The requested run materializes that source's partitions and no other.
    request = second.run_requests[0]
    result = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags
    )
    assert result.success
    for asset in ("raw_archive", "extracted_replays", "parsed_replays"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"inbox-tournament-a"}
    assert result.asset_materializations_for_node("parsed_replays")[0].metadata["parsed"].value == 3
    # The archive was read in place from the inbox, extracted under raw/<source>/extracted.
    assert not (root.source_raw_dir("inbox-tournament-a") / "tournament-a.7z").exists()
    assert len(list(root.source_extracted_dir("inbox-tournament-a").rglob("*.slp"))) == 3


def test_inbox_folder_is_a_source_too(tmp_path: Path, replays: Path) -> None:
    root = DataRoot(tmp_path / "data")
    melee = MeleeDataResource(
        data_dir=str(root.root),
        sources_file=str(empty_sources_file(tmp_path)),
        replay_folder=str(tmp_path / "x"),
    )
    defs = build_definitions(melee)
    shutil.copytree(replays / "hohav__py-slippi", tmp_path / "My Weekly #12")
    copy_into_inbox(tmp_path / "My Weekly #12", root)
    result, _ = tick(defs, "source_sensor", dg.DagsterInstance.ephemeral(), None, melee=melee)
    assert [r.partition_key for r in result.run_requests] == ["inbox-my-weekly-12"]


def test_weekly_schedule_requests_a_retraining() -> None:
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("weekly_retrain_schedule")
    monday = datetime.datetime(2026, 11, 30, 4, 0, tzinfo=datetime.timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=monday) as context:
        data = schedule.evaluate_tick(context)
    assert len(data.run_requests) == 1
    assert defs.resolve_job_def(schedule.job_name).name == "retrain_job"
    assert schedule.cron_schedule == "0 4 * * 1"


def test_manifest_growth_requests_retraining_after_enough_new_games() -> None:
    defs = build_definitions()
    instance = dg.DagsterInstance.ephemeral()
    automation = AutomationSettings(retrain_min_new_eligible_games=10)

    def manifest_with(eligible: int) -> None:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("replay_manifest", metadata={"eligible_games": eligible})
        )

    result, cursor = tick(defs, "manifest_growth_sensor", instance, None, automation=automation)
    assert isinstance(result, dg.SkipReason)  # no manifest yet
    manifest_with(12)
    result, cursor = tick(defs, "manifest_growth_sensor", instance, cursor, automation=automation)
    assert isinstance(result, dg.RunRequest) and result.tags["meleewm/eligible_games"] == "12"
    assert json.loads(cursor) == {"eligible_at_last_retrain": 12}
    manifest_with(20)  # 8 more: not enough yet
    result, cursor = tick(defs, "manifest_growth_sensor", instance, cursor, automation=automation)
    assert isinstance(result, dg.SkipReason) and "8 new eligible games" in str(result.skip_message)
    manifest_with(22)
    result, cursor = tick(defs, "manifest_growth_sensor", instance, cursor, automation=automation)
    assert isinstance(result, dg.RunRequest) and json.loads(cursor) == {"eligible_at_last_retrain": 22}
