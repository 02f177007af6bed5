"""The whole graph, from a real loopback HTTP server to an evaluated checkpoint, in a test instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from replay_archives import ESCAPE_ENTRY, ServedArchives, write_sources_file

from meleewm_core.cli import main as meleewm_main
from meleewm_core.lineage import game_lineage, run_lineage
from meleewm_core.manifest import read_manifest
from meleewm_core.parse import read_ledger
from meleewm_core.store import DataRoot
from meleewm_pipeline.definitions import build_definitions
from meleewm_pipeline.defs.resources import MeleeDataResource

TINY_RUN_CONFIG = {
    "ops": {
        "encoded_shards": {"config": {"experiment": "tiny"}},
        "world_model": {"config": {"experiment": "tiny"}},
        "model_evaluation": {"config": {"steps": 10, "starts": 2, "game_start_steps": 30}},
    }
}


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    assert records, f"{asset} ({partition}) was not materialized"
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


def step_failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        str(event.step_failure_data.error.message) + str(event.step_failure_data.user_failure_data or "")
        for event in result.all_events
        if event.is_step_failure
    )


@pytest.mark.slow
def test_whole_graph_from_http_sources_to_evaluated_checkpoint(
    tmp_path: Path, served_archives: ServedArchives, http_server, experiments_dir: Path, capsys
) -> None:
    root = DataRoot(tmp_path / "data")
    melee = MeleeDataResource(
        data_dir=str(root.root),
        sources_file=str(
            write_sources_file(
                tmp_path / "sources.yaml", http_server, served_archives, ("tournament-a.7z", "weekly-c.zip")
            )
        ),
        replay_folder=str(tmp_path / "no-local-replays"),
        experiments_dir=str(experiments_dir),
        parse_workers=2,
    )
    defs = build_definitions(melee)
    instance = dg.DagsterInstance.ephemeral()

    # The sensor finds both sources of the sources file and asks for one ingest run each.
    sensor_result = defs.resolve_sensor_def("source_sensor")(
        dg.build_sensor_context(instance=instance, resources={"melee": melee})
    )
    assert sorted(r.partition_key for r in sensor_result.run_requests) == ["tournament-a", "weekly-c"]
    instance.add_dynamic_partitions(
        "source", sorted(sensor_result.dynamic_partitions_requests[0].partition_keys)
    )

    ingest = defs.resolve_job_def("ingest_job")
    assert ingest.execute_in_process(instance=instance, partition_key="tournament-a").success
    result_c = ingest.execute_in_process(instance=instance, partition_key="weekly-c")
    assert result_c.success
    # Downloads, extraction and parsing wrote under the data root only.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "experiments", "sources.yaml"]

    # The malformed replay is in the ledger with its cause; the parse metadata shows it too.
    ledger = read_ledger(root)
    broken = ledger.filter(pl.col("path").str.ends_with(served_archives.malformed_name))
    assert broken["status"].to_list() == ["failed"]
    assert broken["error_class"][0] and broken["error"][0]
    parsed_c = latest_metadata(instance, "parsed_replays", "weekly-c")
    assert parsed_c["failed"] == 1 and served_archives.malformed_name in parsed_c["failures"]

    # The replay both archives carry is one game with two sources.
    manifest = read_manifest(root)
    duplicate = manifest.filter(pl.col("md5") == served_archives.duplicate_md5)
    assert duplicate.height == 1
    assert sorted(duplicate["sources"][0]) == ["tournament-a", "weekly-c"]
    manifest_meta = latest_metadata(instance, "replay_manifest")
    assert manifest_meta["eligible_games"] == manifest.filter(pl.col("eligible")).height >= 4

    # Shards, a tiny training run and its evaluation.
    retrain_result = defs.resolve_job_def("retrain_job").execute_in_process(
        instance=instance, run_config=TINY_RUN_CONFIG
    )
    assert retrain_result.success
    trained = latest_metadata(instance, "world_model")
    assert Path(trained["best_checkpoint"]).is_file() and Path(trained["run_manifest"]).is_file()
    assert "tournament-a" in trained["sources"] and "weekly-c" in trained["sources"]
    checks = {
        evaluation.check_name: evaluation.passed
        for result in (result_c, retrain_result)
        for evaluation in result.get_asset_check_evaluations()
    }
    assert checks["replay_manifest_unique_and_sane"] and checks["encoded_shards_match_encoding"]
    assert checks["world_model_loss_is_finite"]
    # One malformed file of four in weekly-c is above the 20% default: a warning, not a failure.
    assert checks["parsed_replays_failure_rate"] is False

    # Lineage: the run's games come back with their sources, and the duplicate game names the run.
    lineage = run_lineage(trained["run_dir"])
    assert lineage.sources.keys() == {"tournament-a", "weekly-c"} and lineage.unknown_games == 0
    assert len(lineage.games) == trained["games"] == trained["train_games"] + trained["val_games"]
    assert "position_mae" in trained["validation_vs_persistence"]
    uses = game_lineage(served_archives.duplicate_md5, root)
    assert [str(u.run_dir) for u in uses] == [trained["run_dir"]]
    assert meleewm_main(["lineage", trained["run_dir"]]) == 0
    printed = capsys.readouterr().out
    assert served_archives.duplicate_md5 in printed and "Game_renamed_copy.slp" in printed

    evaluation = latest_metadata(instance, "model_evaluation")
    assert Path(evaluation["report_json"]).is_file()
    assert Path(evaluation["run_dir"]) == Path(trained["run_dir"])
    assert Path(evaluation["plot_rollout_from_game_start"]).is_file()
    assert evaluation["game_start_steps"] == 30 and evaluation["game_start_position_error_last"] >= 0

    # The imitation policy trains off the same shards and is scored beside copy-previous.
    policy = dg.materialize(
        [defs.get_assets_def("policy")],
        instance=instance,
        resources={"melee": melee},
        run_config={"ops": {"policy": {"config": {"experiment": "tiny-policy"}}}},
    )
    assert policy.success
    trained_policy = latest_metadata(instance, "policy")
    assert Path(trained_policy["best_checkpoint"]).is_file()
    assert trained_policy["games"] == trained["games"]
    assert "stick_mae" in trained_policy["validation_vs_copy_previous"]


def test_wrong_checksum_fails_the_partition_naming_both_sums(
    tmp_path: Path, served_archives: ServedArchives, http_server
) -> None:
    wrong = "f" * 64
    sources = tmp_path / "sources.yaml"
    write_sources_file(sources, http_server, served_archives)
    sources.write_text(sources.read_text().replace(served_archives.sha256["tournament-a.7z"], wrong))
    defs = build_definitions(MeleeDataResource(data_dir=str(tmp_path / "data"), sources_file=str(sources)))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("source", ["tournament-a"])
    result = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, partition_key="tournament-a", raise_on_error=False
    )
    assert not result.success
    message = step_failure_messages(result)
    assert wrong in message and served_archives.sha256["tournament-a.7z"] in message
    assert not (tmp_path / "data" / "raw" / "tournament-a" / "tournament-a.7z").exists()


def ingest_trap_archive(tmp_path: Path, served_archives: ServedArchives, http_server):
    """Ingest tournament-a, then tournament-b (the archive with the escaping entry)."""
    root = DataRoot(tmp_path / "data")
    sources = write_sources_file(tmp_path / "sources.yaml", http_server, served_archives)
    defs = build_definitions(
        MeleeDataResource(data_dir=str(root.root), sources_file=str(sources), parse_workers=2)
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("source", ["tournament-a", "tournament-b"])
    ingest = defs.resolve_job_def("ingest_job")
    assert ingest.execute_in_process(instance=instance, partition_key="tournament-a").success
    result = ingest.execute_in_process(instance=instance, partition_key="tournament-b", raise_on_error=False)
    return root, instance, result


def test_escaping_archive_entry_is_refused_and_named(
    tmp_path: Path, served_archives: ServedArchives, http_server
) -> None:
    root, instance, result = ingest_trap_archive(tmp_path, served_archives, http_server)
    # Nothing lands outside the extraction folder, let alone outside the data root.
    assert not list(tmp_path.rglob("escape.slp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sources.yaml"]
    # The refusal names the archive and the entry in the extraction metadata; the rest is extracted.
    assert result.success
    said = str(latest_metadata(instance, "extracted_replays", "tournament-b"))
    assert "tournament-b.zip" in said and ESCAPE_ENTRY in said
    # Another source's data is untouched by this partition's failure.
    assert len(read_manifest(root).filter(pl.col("sources").list.contains("tournament-a"))) == 3


def test_rest_of_an_archive_with_an_escaping_entry_is_ingested(
    tmp_path: Path, served_archives: ServedArchives, http_server
) -> None:
    root, _, result = ingest_trap_archive(tmp_path, served_archives, http_server)
    assert result.success
    ledger = read_ledger(root)
    assert ledger.filter(pl.col("path").str.ends_with(served_archives.malformed_name))[
        "status"
    ].to_list() == ["failed"]
    duplicate = read_manifest(root).filter(pl.col("md5") == served_archives.duplicate_md5)
    assert duplicate.height == 1 and sorted(duplicate["sources"][0]) == ["tournament-a", "tournament-b"]


def test_corrupt_archive_fails_its_partition_only(tmp_path: Path, served_archives: ServedArchives) -> None:
    broken = tmp_path / "half.zip"
    broken.write_bytes((served_archives.folder / "weekly-c.zip").read_bytes()[:5000])  # cut short
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"name": "half", "url": broken.as_uri(), "format": "zip", "description": "truncated"},
                    {
                        "name": "whole",
                        "url": (served_archives.folder / "weekly-c.zip").as_uri(),
                        "format": "zip",
                        "description": "intact",
                    },
                ]
            }
        )
    )
    root = DataRoot(tmp_path / "data")
    defs = build_definitions(
        MeleeDataResource(data_dir=str(root.root), sources_file=str(sources), parse_workers=1)
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("source", ["half", "whole"])
    ingest = defs.resolve_job_def("ingest_job")
    failed = ingest.execute_in_process(instance=instance, partition_key="half", raise_on_error=False)
    assert not failed.success
    assert "half.zip" in step_failure_messages(failed) and "cannot" in step_failure_messages(failed)
    assert ingest.execute_in_process(instance=instance, partition_key="whole").success
    assert instance.get_materialized_partitions(dg.AssetKey("parsed_replays")) == {"whole"}
