"""The five things a person does in the Dagster UI (issue 6), each clicked through in headless Chromium
against a real webserver and daemon (fixtures in ``conftest.py``).

The flows share one instance, in this order: reading pages first (lineage, a failed replay, the
trained model), then the two flows that add a source and change the data. The backfill flow runs
before the click flow so that the staleness it reports is its own doing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import polars as pl
import pytest
from flow_replays import INBOX_GAMES, LOCAL_GAMES, MALFORMED_REPLAY, SOURCES_FILE_GAMES
from playwright.sync_api import Locator, Page, expect
from ui_harness import CODE_LOCATION, LOCAL_SOURCE, RUN_TIMEOUT_S, PipelineInstance, write_zip

from meleewm_core.parse import read_ledger
from meleewm_core.sources import INBOX_PREFIX, slugify
from meleewm_core.store import DataRoot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ASSETS_BY_GROUP = {
    "ingest": ("raw_archive", "extracted_replays", "parsed_replays", "replay_manifest"),
    "training": ("encoded_shards", "world_model", "model_evaluation", "policy"),
}
HEADLINE_METRICS = ("action_acc", "action_change_acc", "position_mae", "damage_mae")

ASSET_DESCRIPTIONS_QUERY = """
{ assetNodes { assetKey { path } description groupName } }
"""

LATEST_MATERIALIZATION_QUERY = """
query Latest($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    ... on Asset { assetMaterializations(limit: 1, partitions: $partitions) { runId partition } }
  }
}
"""


def _top_level_row(page: Page, key: str) -> Locator:
    """The metadata row whose first cell is ``key``, not a row of a markdown table inside a value."""
    return page.locator(f'xpath=//tr[not(ancestor::td)][td[1][normalize-space()="{key}"]]').first


def metadata_value(page: Page, key: str) -> Locator:
    """The value cell of one entry of the latest materialization's metadata on an asset's overview
    (columns: key, timestamp, value)."""
    return _top_level_row(page, key).get_by_role("cell").nth(2)


def key_value_metadata(page: Page, key: str) -> Locator:
    """The value cell of one entry of a two-column metadata table: the partition selected on the
    Partitions tab, the latest execution of an asset check."""
    return _top_level_row(page, key).get_by_role("cell").nth(1)


def latest_run_id(pipeline: PipelineInstance, asset: str, partition: str | None = None) -> str | None:
    data = pipeline.stack.graphql(
        LATEST_MATERIALIZATION_QUERY,
        {"key": {"path": [asset]}, "partitions": [partition] if partition else None},
    )
    events = data["assetOrError"]["assetMaterializations"]
    return events[0]["runId"] if events else None


def open_materialize_dialog(page: Page) -> Locator:
    page.get_by_role("button", name=re.compile(r"^materialization Materialize")).first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    expect(dialog).to_be_visible()
    return dialog


def add_partition_in_dialog(page: Page, dialog: Locator, partition: str) -> None:
    """Dagster's "Add a partition" button registers a new `source` partition; then pick it (alone) in
    the partition selector, which the job page does by itself and the lineage page does not."""
    dialog.get_by_role("button", name="Add a partition").click()
    add = page.get_by_role("dialog").filter(has_text="Add a partition for source")
    add.get_by_role("textbox").fill(partition)
    add.get_by_role("button", name="Save").click()
    expect(add).to_be_hidden()
    dialog.get_by_role("img", name="expand_more").click()
    page.get_by_role("textbox", name="Filter partitions").fill(partition)
    # Dagster's middle-truncating labels repeat the name in the accessible name ("cup-2 cup-2").
    option = page.get_by_role(
        "menuitem", name=re.compile(rf"^{re.escape(partition)}( {re.escape(partition)})?$")
    )
    if not option.get_by_role("checkbox").is_checked():
        option.click()
    page.keyboard.press("Escape")
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()


def launch_and_wait_for_run(page: Page, pipeline: PipelineInstance, dialog: Locator) -> str:
    """Press "Launch 1 run", follow the toast to the run page and wait there until it succeeds."""
    dialog.get_by_role("button", name="Launch 1 run").click()
    toast = page.get_by_role("region", name=re.compile("Notifications"))
    toast.get_by_role("link", name="View").click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    # The run page's status tag flips from Queued/Starting/Started to Success by itself.
    try:
        expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_TIMEOUT_S * 1000)
    except AssertionError as error:
        raise AssertionError(
            f"run {run_id} did not succeed: {pipeline.stack.run_failure_messages(run_id)}"
        ) from error
    return run_id


def partition_list_entry(page: Page, partition: str) -> Locator:
    return page.get_by_text(partition, exact=True).first


def test_lineage_page_shows_every_asset_with_group_and_description(
    page: Page, pipeline: PipelineInstance
) -> None:
    """Flow 1: the asset lineage shows the whole graph in its groups; the catalog gives each asset's
    one-line description."""
    page.goto(pipeline.url + "/asset-groups")
    for group in ASSETS_BY_GROUP:
        expect(page.get_by_role("button", name=f"asset_group {group}")).to_be_visible()

    # Groups start collapsed; the graph's settings menu expands them all.
    page.get_by_role("button", name="settings").last.click()
    page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
    graph = page.locator("svg").filter(has_text="raw_archive").first
    for assets in ASSETS_BY_GROUP.values():
        for asset in assets:
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    expect(graph).to_be_visible()

    # Whatever the definitions say is what a newcomer must read in the catalog, beside the group.
    definitions = {
        node["assetKey"]["path"][-1]: node
        for node in pipeline.stack.graphql(ASSET_DESCRIPTIONS_QUERY)["assetNodes"]
    }
    page.goto(pipeline.url + "/assets")
    for group, assets in ASSETS_BY_GROUP.items():
        for asset in assets:
            description = (definitions[asset]["description"] or "").strip()
            assert description and "\n" not in description, f"{asset} needs a one-line description"
            assert definitions[asset]["groupName"] == group
            expect(page.get_by_role("link", name=asset, exact=False).first).to_be_visible()
            expect(page.get_by_text(description, exact=True)).to_be_visible()
            group_link = page.locator(f'a[href*="/{asset}"]').filter(has_text=re.compile(rf"^{group}$"))
            expect(group_link).to_have_count(1)


def test_failed_replay_is_listed_with_its_cause_and_the_failure_rate_check_reports(
    page: Page, pipeline: PipelineInstance
) -> None:
    """Flow 5: the truncated replay in the local folder appears in `parsed_replays`' metadata with its
    file name and cause, and the failure-rate check shows its verdict."""
    failed = read_ledger(DataRoot(pipeline.stack.data_root)).filter(pl.col("status") == "failed")
    assert failed["path"].to_list() == [str(pipeline.stack.replays / Path(MALFORMED_REPLAY).name)]
    error_class, message = failed["error_class"][0], failed["error"][0]

    page.goto(pipeline.url + "/assets/parsed_replays?view=partitions")
    partition_list_entry(page, LOCAL_SOURCE).click()
    expect(page).to_have_url(re.compile(rf"partition={LOCAL_SOURCE}"))
    failures = key_value_metadata(page, "failures")
    expect(failures).to_contain_text(Path(MALFORMED_REPLAY).name)
    expect(failures).to_contain_text(error_class)
    expect(failures).to_contain_text(message)
    expect(key_value_metadata(page, "failed")).to_have_text("1")

    page.get_by_role("tab", name="Checks").click()
    expect(page).to_have_url(re.compile(r"view=checks"))
    check = page.get_by_text("parsed_replays_failure_rate", exact=True)
    expect(check.first).to_be_visible()
    # One unreadable file out of four in the source: 25 %, above the configured 20 % limit.
    files_in_source = len(LOCAL_GAMES) + 1
    expect(page.get_by_text("Evaluation result")).to_be_visible()
    expect(page.get_by_text("Failed", exact=True).first).to_be_visible()
    expect(
        page.get_by_text(re.compile(rf"source\(s\) above .* parse failures: {LOCAL_SOURCE}"))
    ).to_be_visible()
    expect(key_value_metadata(page, "max_failure_rate")).to_have_text(str(1 / files_in_source))


def test_world_model_and_evaluation_metadata_tell_what_fed_the_checkpoint(
    page: Page, pipeline: PipelineInstance
) -> None:
    """Flow 4: the latest `world_model` materialization names its games, sources, data fingerprint,
    validation metrics beside persistence and its run manifest; `model_evaluation` has the rollout
    table and the plot paths."""
    page.goto(pipeline.url + "/assets/world_model")
    manifest_path = Path(metadata_value(page, "run_manifest").inner_text().strip())
    assert manifest_path.name == "manifest.json" and manifest_path.is_file(), manifest_path
    manifest = json.loads(manifest_path.read_text())
    # The materialization shown is the one of the set-up training run, and the manifest says so too.
    latest = page.get_by_role("link", name=re.compile("ago$")).first
    expect(latest).to_have_attribute("href", re.compile(pipeline.setup_run_ids["retrain"]))
    assert manifest["dagster_run_id"] == pipeline.setup_run_ids["retrain"]

    games = manifest["game_md5s"]
    expect(metadata_value(page, "games")).to_have_text(str(len(games["train"]) + len(games["val"])))
    expect(metadata_value(page, "train_games")).to_have_text(str(len(games["train"])))
    expect(metadata_value(page, "val_games")).to_have_text(str(len(games["val"])))
    expect(metadata_value(page, "data_fingerprint")).to_have_text(manifest["data_fingerprint"])
    sources = metadata_value(page, "sources")
    expect(sources.get_by_role("row", name=f"{LOCAL_SOURCE} {len(LOCAL_GAMES)}")).to_be_visible()

    # The headline validation metrics, each on one line with the persistence baseline's figure.
    validation = manifest["all_epochs"][-1]["val"]
    comparison = metadata_value(page, "validation_vs_persistence")
    headers = comparison.get_by_role("columnheader")
    expect(headers.nth(1)).to_have_text("model")
    expect(headers.nth(2)).to_have_text("persistence")
    for metric in HEADLINE_METRICS:
        cells = comparison.get_by_role("row").filter(has=page.get_by_role("cell", name=metric, exact=True))
        shown_model = float(cells.get_by_role("cell").nth(1).inner_text())
        shown_baseline = float(cells.get_by_role("cell").nth(2).inner_text())
        assert math.isclose(shown_model, validation[metric], abs_tol=1e-4), metric
        assert math.isclose(shown_baseline, validation[f"baseline/{metric}"], abs_tol=1e-4), metric

    page.goto(pipeline.url + "/assets/model_evaluation")
    expect(metadata_value(page, "run_dir")).to_have_text(str(manifest_path.parent))
    plot_rows = page.get_by_role("row").filter(has=page.get_by_role("cell", name=re.compile(r"^plot_")))
    expect(plot_rows.first).to_be_visible()
    for index in range(plot_rows.count()):
        plot = Path(plot_rows.nth(index).get_by_role("cell").last.inner_text().strip())
        assert plot.suffix == ".png" and plot.is_file(), plot
    metadata_value(page, "report").get_by_text("[Show Markdown]").click()
    report = page.get_by_role("dialog")
    expect(report.get_by_role("heading", name=re.compile(r"^Rollout \(\d+ starts"))).to_be_visible()
    expect(
        report.get_by_role("heading", name=re.compile("^Rollout from each validation game's start"))
    ).to_be_visible()
    rollout_tables = report.get_by_role("table").filter(has=page.get_by_role("columnheader", name="step 1"))
    expect(rollout_tables).to_have_count(2)
    for index in range(2):
        table = rollout_tables.nth(index)
        expect(table.get_by_role("cell", name="persistence", exact=True).first).to_be_visible()
    expect(rollout_tables.nth(1).get_by_role("columnheader", name="step 30")).to_be_visible()


def test_backfill_of_a_new_inbox_source_updates_the_manifest_and_marks_training_stale(
    page: Page, pipeline: PipelineInstance, replays: Path
) -> None:
    """Flow 3: an archive dropped into the inbox becomes a source; the backfill of the ingest group
    for that one partition, launched from the lineage page, re-materializes the manifest; the
    training stages are then shown out of date (Unsynced) and not retrained, as the automation rules
    say: no asset retrains eagerly; the growth sensor waits for a configured number of new eligible
    games (and, like the weekly schedule, starts switched off).

    Dagster's launch dialog runs a backfill of a single partition as one partitioned run ("Launch 1
    run"); with several sources selected the same button reads "Launch backfill"."""
    archive = write_zip(pipeline.inbox / "Weekly 7.zip", replays, INBOX_GAMES)
    partition = f"{INBOX_PREFIX}{slugify(archive.stem)}"
    manifest_run_before = latest_run_id(pipeline, "replay_manifest")

    page.goto(pipeline.url + '/asset-groups~group%3A"training"')
    expect(page.get_by_text("encoded_shards", exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Unsynced"))).to_have_count(0)

    page.goto(pipeline.url + '/asset-groups~group%3A"ingest"')
    dialog = open_materialize_dialog(page)
    expect(dialog.get_by_text("Launch runs to materialize 4 assets")).to_be_visible()
    add_partition_in_dialog(page, dialog, partition)
    run_id = launch_and_wait_for_run(page, pipeline, dialog)
    assert run_id != manifest_run_before

    page.goto(pipeline.url + "/assets/replay_manifest")
    expect(page.get_by_role("link", name=re.compile("ago$")).first).to_have_attribute(
        "href", re.compile(run_id)
    )
    per_source = metadata_value(page, "per_source")
    expect(
        per_source.get_by_role("row", name=f"{partition} {len(INBOX_GAMES)} {len(INBOX_GAMES)}")
    ).to_be_visible()

    page.goto(pipeline.url + '/asset-groups~group%3A"training"')
    expect(page.get_by_text(re.compile(r"^Unsynced")).first).to_be_visible()
    assert latest_run_id(pipeline, "world_model") == pipeline.setup_run_ids["retrain"]


def test_new_source_partition_is_materialized_by_clicking_and_others_stay_untouched(
    page: Page, pipeline: PipelineInstance, replays: Path
) -> None:
    """Flow 2: a new entry in the sources file, its partition added and materialized from the ingest
    job's page; the run succeeds, the partition turns green, the local source keeps its old run."""
    archive = write_zip(pipeline.archives_dir / "cup-2.zip", replays, SOURCES_FILE_GAMES)
    pipeline.add_source_entry("cup-2", archive, "a second tournament, added by the browser test")
    local_run_before = latest_run_id(pipeline, "parsed_replays", LOCAL_SOURCE)

    page.goto(f"{pipeline.url}/locations/{CODE_LOCATION}/jobs/ingest_job")
    dialog = open_materialize_dialog(page)
    add_partition_in_dialog(page, dialog, "cup-2")
    run_id = launch_and_wait_for_run(page, pipeline, dialog)

    page.goto(pipeline.url + "/assets/parsed_replays?view=partitions")
    expect(page.get_by_text("Missing (0)")).to_be_visible()
    expect(page.get_by_text("Failed (0)")).to_be_visible()
    partition_list_entry(page, "cup-2").click()
    expect(page.get_by_role("link", name=run_id[:8]).first).to_be_visible()
    expect(key_value_metadata(page, "parsed")).to_have_text(str(len(SOURCES_FILE_GAMES)))

    partition_list_entry(page, LOCAL_SOURCE).click()
    expect(page.get_by_role("link", name=local_run_before[:8]).first).to_be_visible()
    assert latest_run_id(pipeline, "parsed_replays", LOCAL_SOURCE) == local_run_before
