"""Fixtures of the browser tests: one real Dagster instance (webserver + daemon) per module, with the
training stages already materialized, and a headless Chromium page on it.

The instance's default local source (``MELEEWM_REPLAYS``) holds three real tournament-grade replays
and one truncated file that cannot be parsed, so every page a flow opens shows real figures and a
real failure. The expensive stages (ingest of that source, shards, a tiny training run, its
evaluation) are launched through GraphQL before the first test (``ui_harness.start_pipeline``): a
flow uses the browser only for what a person does in it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

sys.path.insert(0, str(Path(__file__).parent))
# The harness and the replay lists sit beside this file (tests/ is not a package).
from flow_replays import LOCAL_GAMES, MALFORMED_REPLAY  # noqa: E402
from ui_harness import (  # noqa: E402
    CHROMIUM,
    UI_TIMEOUT_MS,
    PipelineInstance,
    dismiss_community_dialog,
    open_browser,
    skip_community_dialog_whenever_shown,
    start_pipeline,
)

expect.set_options(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/install_browser.sh` (`make test` does)")
    return CHROMIUM


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, replays: Path, chromium: Path
) -> Iterator[PipelineInstance]:
    instance = start_pipeline(
        tmp_path_factory.mktemp("dagster_ui"), replays, [*LOCAL_GAMES, MALFORMED_REPLAY]
    )
    try:
        yield instance
    finally:
        instance.stack.stop()


@pytest.fixture(scope="module")
def browser_context(pipeline: PipelineInstance, tmp_path_factory: pytest.TempPathFactory):
    with (
        sync_playwright() as playwright,
        open_browser(playwright, tmp_path_factory.mktemp("profile")) as context,
    ):
        context.set_default_timeout(UI_TIMEOUT_MS)
        first = context.new_page()
        first.goto(pipeline.url + "/overview")
        # Shown once per fresh instance and profile; every later page goes straight in.
        dismiss_community_dialog(first)
        first.close()
        yield context


@pytest.fixture()
def page(browser_context, request: pytest.FixtureRequest) -> Iterator[Page]:
    page = browser_context.new_page()
    skip_community_dialog_whenever_shown(page)
    yield page
    # A failing flow leaves a picture of the page it was on under .pytest_cache/browser/.
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        target = Path(request.config.rootpath) / ".pytest_cache" / "browser" / f"{request.node.name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)
        print(f"screenshot of the failing page: {target}")
    page.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
