"""`dagster dev` (webserver + daemon) on a free loopback port with a temporary DAGSTER_HOME and the
project's own dagster.yaml: launch `ingest_job` through GraphQL, wait for it, read the
materialization metadata and the asset lineage back through GraphQL, then backfill one new source
and see that only it was materialized."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from replay_archives import ServedArchives, write_sources_file

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GraphQL:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"

    def __call__(self, query: str, **variables) -> dict:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert "errors" not in answer, answer
        return answer["data"]


@pytest.fixture()
def dagster_dev(tmp_path: Path, served_archives: ServedArchives, http_server):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MELEEWM_DATA": str(tmp_path / "data"),
        "MELEEWM_SOURCES": str(
            write_sources_file(
                tmp_path / "sources.yaml", http_server, served_archives, ("tournament-a.7z", "weekly-c.zip")
            )
        ),
        "MELEEWM_REPLAYS": str(tmp_path / "no-local-replays"),
    }
    log = open(tmp_path / "dagster-dev.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    graphql = GraphQL(port)
    deadline = time.monotonic() + START_TIMEOUT_S
    location = None
    while time.monotonic() < deadline and location is None:
        assert process.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
        try:
            data = graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name "
                "locationOrLoadError { __typename } } } } }"
            )
            entries = data["workspaceOrError"]["locationEntries"]
            if entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                location = entries[0]["name"]
        except OSError:
            pass
        time.sleep(1)
    try:
        assert location, (
            f"dagster dev did not load the code location: {(tmp_path / 'dagster-dev.log').read_text()[-3000:]}"
        )
        yield graphql, location, tmp_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def wait_for(check, what: str, timeout_s: float = RUN_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


def add_partition(graphql: GraphQL, location: str, key: str) -> None:
    data = graphql(
        """mutation($key: String!, $loc: String!) { addDynamicPartition(partitionsDefName: "source",
        partitionKey: $key, repositorySelector: {repositoryName: "__repository__", repositoryLocationName: $loc})
        { __typename ... on PythonError { message } } }""",
        key=key,
        loc=location,
    )
    assert data["addDynamicPartition"]["__typename"] == "AddDynamicPartitionSuccess", data


MATERIALIZATIONS = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetMaterializations(limit: 10) { partition runId metadataEntries { label __typename
    ... on IntMetadataEntry { intValue } ... on MarkdownMetadataEntry { mdStr }
    ... on TextMetadataEntry { text } ... on PathMetadataEntry { path } } } } } }"""


def materializations(graphql: GraphQL, asset: str) -> list[dict]:
    return graphql(MATERIALIZATIONS, path=[asset])["assetOrError"]["assetMaterializations"]


@pytest.mark.slow
def test_ingest_through_graphql_then_backfill_one_new_source(
    dagster_dev, served_archives: ServedArchives
) -> None:
    graphql, location, tmp_path = dagster_dev
    add_partition(graphql, location, "tournament-a")
    launched = graphql(
        """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
        ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
        params={
            "selector": {
                "repositoryLocationName": location,
                "repositoryName": "__repository__",
                "jobName": "ingest_job",
            },
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "tournament-a"}]},
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def run_status():
        status = graphql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", id=run_id)
        status = status["runOrError"]["status"]
        assert status not in ("FAILURE", "CANCELED"), (tmp_path / "dagster-dev.log").read_text()[-4000:]
        return status == "SUCCESS"

    wait_for(run_status, "ingest_job to succeed")

    # Materialization metadata, as the asset pages show it.
    parsed = materializations(graphql, "parsed_replays")
    assert [m["partition"] for m in parsed] == ["tournament-a"]
    entries = {e["label"]: e for e in parsed[0]["metadataEntries"]}
    assert entries["parsed"]["intValue"] == 3 and entries["failed"]["intValue"] == 0
    assert "tournament-a" in entries["per_source"]["mdStr"]
    manifest = {e["label"]: e for e in materializations(graphql, "replay_manifest")[0]["metadataEntries"]}
    assert manifest["eligible_games"]["intValue"] == 3 and manifest["data_fingerprint"]["text"]
    raw = {e["label"]: e for e in materializations(graphql, "raw_archive")[0]["metadataEntries"]}
    assert raw["sha256"]["text"] == served_archives.sha256["tournament-a.7z"]

    # Lineage: the asset graph as the UI draws it.
    nodes = graphql("{ assetNodes { assetKey { path } dependencyKeys { path } groupName description } }")[
        "assetNodes"
    ]
    upstream = {n["assetKey"]["path"][0]: sorted(d["path"][0] for d in n["dependencyKeys"]) for n in nodes}
    assert upstream["parsed_replays"] == ["extracted_replays"]
    assert upstream["world_model"] == ["encoded_shards"] and upstream["model_evaluation"] == ["world_model"]
    assert all(n["description"] for n in nodes)

    # A new tournament lands: backfill only its partition; the daemon runs it.
    add_partition(graphql, location, "weekly-c")
    backfill = graphql(
        """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
        __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        params={
            "partitionNames": ["weekly-c"],
            "assetSelection": [{"path": [a]} for a in ("raw_archive", "extracted_replays", "parsed_replays")],
        },
    )["launchPartitionBackfill"]
    assert backfill["__typename"] == "LaunchBackfillSuccess", backfill

    def backfill_done():
        status = graphql(
            "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }",
            id=backfill["backfillId"],
        )["partitionBackfillOrError"]["status"]
        done = status.startswith("COMPLETED") or status in ("FAILED", "CANCELED")
        assert not done or status in ("COMPLETED", "COMPLETED_SUCCESS"), (
            status,
            (tmp_path / "dagster-dev.log").read_text()[-4000:],
        )
        return done

    wait_for(backfill_done, "the backfill of weekly-c")
    partitions = sorted(m["partition"] for m in materializations(graphql, "parsed_replays"))
    assert partitions == ["tournament-a", "weekly-c"]  # tournament-a was not materialized again
    backfilled = [m for m in materializations(graphql, "parsed_replays") if m["partition"] == "weekly-c"]
    assert {e["label"]: e for e in backfilled[0]["metadataEntries"]}["parsed"]["intValue"] == 2
