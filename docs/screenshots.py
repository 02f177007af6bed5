"""Screenshots of the Dagster UI for the README, taken from a real run on real replays.

    .venv/bin/python docs/screenshots.py            # replays from MELEEWM_TEST_REPLAYS or ../shared/replays

Starts a throw-away Dagster instance (webserver + daemon, temporary DAGSTER_HOME and data root) with
the same harness as the browser tests (``tests/browser/ui_harness.py``): its local source holds six
real games and one truncated file; the ingest of that source, a tiny training run and its evaluation
run through Dagster; headless Chromium then saves:

    docs/ui-lineage.png      the asset lineage graph, both groups expanded
    docs/ui-partition.png    the `local` partition of parsed_replays, with the failed replay listed
    docs/ui-world-model.png  the latest world_model materialization's metadata

Takes about two minutes on two CPU cores. Needs Debian's chromium (`bash scripts/install_browser.sh`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "browser"), str(REPO / "tests")]
from ui_harness import (  # noqa: E402 - the harness lives beside the browser tests
    LOCAL_SOURCE,
    dismiss_community_dialog,
    open_browser,
    skip_community_dialog_whenever_shown,
    start_pipeline,
)

# Real, eligible games (two humans, versus, over a minute) and one truncated file peppi rejects.
REPLAYS = (
    "project-slippi__slippi-js/BH9.slp",
    "project-slippi__slippi-js/techTest.slp",
    "project-slippi__slippi-js/rollbackFrameTest.slp",
    "hohav__peppi/nintendont.slp",
    "hohav__peppi/v2.0.slp",
    "hohav__peppi/duplicate_game_end.slp",
    "hohav__peppi/malformed/corrupt.slp",
)
VIEWPORT = (1600, 1000)
# Seven assets in a row are drawn in full (name, latest event, checks, partitions) only this wide.
LINEAGE_VIEWPORT = (2200, 620)
# The asset page scrolls inside its own pane, so a full-page picture is no taller than the window:
# this height holds the whole metadata table of a world_model materialization.
WORLD_MODEL_VIEWPORT = (1600, 1820)
PAGE_TIMEOUT_MS = 60_000


def default_replay_folder() -> Path:
    return Path(os.environ.get("MELEEWM_TEST_REPLAYS") or REPO.parent / "shared" / "replays")


def save(page: Page, target: Path) -> None:
    """Let the page finish drawing, then write the PNG atomically (temp file + rename)."""
    # The UI polls the server all the time, so "network idle" never comes; its figures and
    # animations settle within a second or two of the awaited element.
    page.wait_for_timeout(2000)
    partial = target.with_name(f".partial-{target.name}")
    page.screenshot(path=str(partial))
    os.replace(partial, target)


def shoot_lineage(page: Page, url: str, target: Path) -> None:
    page.goto(url + "/asset-groups")
    # The asset list beside the graph is hidden so that the graph, wide enough to show each
    # asset's status rows, fits the picture.
    page.get_by_role("button", name="panel_show_right", exact=True).click()
    page.get_by_role("button", name="settings").last.click()
    toggle = page.get_by_role("menuitem", name=re.compile("(Expand|Collapse) all groups"))
    # A wide window may show the groups expanded already; the menu then offers to collapse them.
    if toggle.inner_text().startswith("Expand"):
        toggle.click()
    page.keyboard.press("Escape")
    page.get_by_text("model_evaluation", exact=True).first.wait_for()
    save(page, target)


def shoot_partition(page: Page, url: str, target: Path) -> None:
    page.goto(f"{url}/assets/parsed_replays?view=partitions&partition={LOCAL_SOURCE}")
    page.get_by_text("failures", exact=True).first.wait_for()
    save(page, target)


def shoot_world_model(page: Page, url: str, target: Path) -> None:
    page.goto(url + "/assets/world_model")
    page.get_by_text("validation_vs_persistence", exact=True).first.wait_for()
    save(page, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--replays", type=Path, default=default_replay_folder(), help="the shared replay folder"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNG files")
    args = parser.parse_args()
    missing = [name for name in REPLAYS if not (args.replays / name).is_file()]
    if missing:
        parser.error(f"{args.replays} lacks {missing}: set MELEEWM_TEST_REPLAYS or pass --replays")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="meleewm-screenshots-") as workdir:
        print("starting Dagster and running ingest + training (about two minutes) ...", flush=True)
        pipeline = start_pipeline(Path(workdir), args.replays, list(REPLAYS))
        try:
            with (
                sync_playwright() as playwright,
                open_browser(playwright, Path(workdir) / "profile", VIEWPORT) as context,
            ):
                context.set_default_timeout(PAGE_TIMEOUT_MS)
                page = context.new_page()
                page.goto(pipeline.url + "/overview")
                dismiss_community_dialog(page)
                skip_community_dialog_whenever_shown(page)
                args.out.mkdir(parents=True, exist_ok=True)
                for name, shoot, (width, height) in (
                    ("ui-lineage.png", shoot_lineage, LINEAGE_VIEWPORT),
                    ("ui-partition.png", shoot_partition, VIEWPORT),
                    ("ui-world-model.png", shoot_world_model, WORLD_MODEL_VIEWPORT),
                ):
                    page.set_viewport_size({"width": width, "height": height})
                    shoot(page, pipeline.url, args.out / name)
                    print(f"wrote {args.out / name}", flush=True)
        finally:
            pipeline.stack.stop()
    print(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
