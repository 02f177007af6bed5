"""Shared fixtures. Real replays come from ``MELEEWM_TEST_REPLAYS`` (default ``../shared/replays``).

Without them the replay tests are skipped locally with a message saying how to get them
(``scripts/fetch_test_replays.py``); in CI (``CI`` set) their absence is an error, so a suite
that needs them can never pass silently without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REPLAYS_ENV = "MELEEWM_TEST_REPLAYS"


def replay_folder() -> Path:
    return Path(os.environ.get(REPLAYS_ENV) or REPO.parent / "shared" / "replays").resolve()


@pytest.fixture(scope="session")
def replays() -> Path:
    folder = replay_folder()
    if not (folder / "SOURCES.md").is_file():
        message = (
            f"test replays not found at {folder}: set {REPLAYS_ENV} or run "
            f"`python scripts/fetch_test_replays.py {folder}` to download the pinned files"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


# A small, varied set of well-formed replays that parse fully and are eligible for training:
# two humans, versus, at least a minute. Used wherever a test needs real games but not all of them.
TRAINING_REPLAYS = (
    "project-slippi__slippi-js/BH9.slp",
    "project-slippi__slippi-js/techTest.slp",
    "project-slippi__slippi-js/rollbackFrameTest.slp",
    "hohav__peppi/nintendont.slp",
    "hohav__peppi/v2.0.slp",
    "hohav__peppi/duplicate_game_end.slp",
)


@pytest.fixture(scope="session")
def training_replays(replays: Path) -> list[Path]:
    return [replays / name for name in TRAINING_REPLAYS]


@pytest.fixture(scope="session")
def parsed_root(tmp_path_factory: pytest.TempPathFactory, training_replays: list[Path]):
    """A data root holding the training replays parsed and a built manifest (read-only for tests)."""
    from meleewm_core.manifest import build_manifest
    from meleewm_core.parse import parse_paths
    from meleewm_core.store import DataRoot

    root = DataRoot(tmp_path_factory.mktemp("parsed_root"))
    parse_paths(training_replays, root, source="shared", workers=2)
    build_manifest(root)
    return root
