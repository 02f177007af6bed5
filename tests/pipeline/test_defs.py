"""The names users and docs speak of stay put: assets, jobs, schedules, sensors, checks.

A rename shows up here in review. Also: the project loads the way `dagster dev` loads it, and the
shipped sources file lists the public archives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg

from meleewm_core.sources import load_sources
from meleewm_pipeline.definitions import build_definitions
from meleewm_pipeline.defs.policy.assets import policy
from meleewm_pipeline.defs.train.assets import world_model

REPO = Path(__file__).resolve().parents[2]


def test_asset_graph_names_groups_and_policies() -> None:
    graph = build_definitions().resolve_asset_graph()
    nodes = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    assert set(nodes) == {
        "raw_archive",
        "extracted_replays",
        "parsed_replays",
        "replay_manifest",
        "encoded_shards",
        "world_model",
        "model_evaluation",
        "policy",
    }
    upstream = {name: sorted(p.to_user_string() for p in node.parent_keys) for name, node in nodes.items()}
    assert upstream == {
        "raw_archive": [],
        "extracted_replays": ["raw_archive"],
        "parsed_replays": ["extracted_replays"],
        "replay_manifest": ["parsed_replays"],
        "encoded_shards": ["replay_manifest"],
        "world_model": ["encoded_shards"],
        "model_evaluation": ["world_model"],
        "policy": ["encoded_shards"],
    }
    for name in ("raw_archive", "extracted_replays", "parsed_replays"):
        assert nodes[name].partitions_def == dg.DynamicPartitionsDefinition(name="source")
        assert nodes[name].backfill_policy.max_partitions_per_run > 1
    assert nodes["replay_manifest"].partitions_def is None
    assert world_model.op.pool == policy.op.pool == "gpu"
    for name, node in nodes.items():
        assert node.description and "\n" not in node.description, name
        assert node.group_name in {"ingest", "training"}, name


def test_jobs_schedules_sensors_and_checks() -> None:
    defs = build_definitions()
    assert {job.name for job in defs.jobs} == {"ingest_job", "retrain_job"}
    assert {s.name for s in defs.schedules} == {"weekly_retrain_schedule"}
    assert {s.name for s in defs.sensors} == {"source_sensor", "manifest_growth_sensor"}
    checks = {(k.asset_key.to_user_string(), k.name) for k in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {
        ("parsed_replays", "parsed_replays_failure_rate"),
        ("replay_manifest", "replay_manifest_unique_and_sane"),
        ("encoded_shards", "encoded_shards_match_encoding"),
        ("world_model", "world_model_loss_is_finite"),
        ("world_model", "world_model_beats_persistence"),
    }
    graph = defs.resolve_asset_graph()
    blocking = {key.name for key in graph.asset_check_keys if graph.get_check_spec(key).blocking}
    assert blocking == {"replay_manifest_unique_and_sane", "encoded_shards_match_encoding"}


def test_project_loads_like_dagster_dev(tmp_path: Path) -> None:
    """`dagster definitions validate` loads workspace.yaml and [tool.dg] exactly as `dagster dev` does."""
    for args in (["-w", "workspace.yaml"], ["-m", "meleewm_pipeline.definitions"]):
        done = subprocess.run(
            [sys.executable, "-m", "dagster", "definitions", "validate", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                "PATH": str(Path(sys.executable).parent),
                "DAGSTER_HOME": str(tmp_path),
                "HOME": str(tmp_path),
            },
        )
        assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": str(Path(sys.executable).parent), "DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_shipped_sources_file_lists_the_public_archives() -> None:
    sources = {s.name: s for s in load_sources(REPO / "sources.yaml")}
    gcs = "https://storage.googleapis.com/slippi.appspot.com/"
    for name in ("gang", "full-bloom-5", "fight-pitt-9", "pound-2019", "national-melee-arcadian-2"):
        assert sources[name].format == "7z" and sources[name].url.startswith(gcs + "dump/")
        assert sources[name].kind == "download"
    assert sources["summit-11"].format == "zip" and sources["summit-11"].url.startswith(gcs)
    assert "dropbox.com" in sources["test-dataset-32"].url and sources["test-dataset-32"].url.endswith("dl=1")
    assert (
        sources["phillip-matchup-compilation"].manual
        and not sources["phillip-matchup-compilation"].url_verified
    )
    assert sources["anonymized-ranked"].manual and "drive.google.com" in sources["anonymized-ranked"].url
    assert sources["onedrive-collection"].manual and "1drv.ms" in sources["onedrive-collection"].url
