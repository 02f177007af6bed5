"""Fixtures for the pipeline tests: real archives built from the shared replays, a real loopback
HTTP server serving them, and a tiny experiment."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import py7zr
import pytest
import yaml
from replay_archives import (
    ARCHIVE_A_GAMES,
    ARCHIVE_B_GAMES,
    DUPLICATED,
    ESCAPE_ENTRY,
    MALFORMED,
    ServedArchives,
    md5_of,
)
from replay_http_server import ReplayHTTPServer
from tiny_runs import TINY_EXPERIMENT


@pytest.fixture(scope="session")
def served_archives(tmp_path_factory: pytest.TempPathFactory, replays: Path) -> ServedArchives:
    """tournament-a.7z (3 games, nested folders); tournament-b.zip (2 games, a malformed replay, a
    renamed copy of an archive-A game, and an entry that tries to escape the extraction folder);
    weekly-c.zip (tournament-b without the escaping entry)."""
    folder = tmp_path_factory.mktemp("www")
    with py7zr.SevenZipFile(
        folder / "tournament-a.7z", "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 1}]
    ) as archive:
        for index, name in enumerate(ARCHIVE_A_GAMES):
            archive.write(replays / name, arcname=f"day{index % 2 + 1}/pool-{index}/{Path(name).name}")
    with zipfile.ZipFile(folder / "tournament-b.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in ARCHIVE_B_GAMES:
            archive.write(replays / name, arcname=f"top8/{Path(name).name}")
        archive.write(replays / MALFORMED, arcname="broken/corrupt.slp")
        archive.write(replays / DUPLICATED, arcname="top8/Game_renamed_copy.slp")
        archive.writestr(zipfile.ZipInfo(ESCAPE_ENTRY), (replays / ARCHIVE_B_GAMES[0]).read_bytes())
        archive.writestr("notes/readme.txt", "not a replay")
    # The same games, malformed file and duplicate without the escaping entry: an archive every
    # extractor accepts, for the tests that need a second source to go all the way through.
    with zipfile.ZipFile(folder / "weekly-c.zip", "w") as archive:
        for name in ARCHIVE_B_GAMES:
            archive.write(replays / name, arcname=Path(name).name)
        archive.write(replays / MALFORMED, arcname="broken/corrupt.slp")
        archive.write(replays / DUPLICATED, arcname="Game_renamed_copy.slp")
    return ServedArchives(
        folder=folder,
        sha256={p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()},
        duplicate_md5=md5_of(replays / DUPLICATED),
        malformed_name="corrupt.slp",
    )


@pytest.fixture(scope="session")
def http_server(served_archives: ServedArchives):
    with ReplayHTTPServer(served_archives.folder) as server:
        yield server


@pytest.fixture()
def experiments_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY_EXPERIMENT))
    tiny_policy = {**TINY_EXPERIMENT, "model": {**TINY_EXPERIMENT["model"], "name": "imitation_policy_mlp"}}
    (folder / "tiny-policy.yaml").write_text(yaml.safe_dump(tiny_policy))
    return folder
