"""Downloads from a real loopback HTTP server: resume after a dropped connection, checksums, file://."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from replay_http_server import ReplayHTTPServer

from meleewm_core.download import ChecksumMismatchError, ManualSourceMissingError, download, fetch_source
from meleewm_core.sources import SourceConfig
from meleewm_core.store import DataRoot


@pytest.fixture()
def served(tmp_path: Path, replays: Path):
    """A real replay (about 1 MB) behind a loopback HTTP server."""
    folder = tmp_path / "www"
    folder.mkdir()
    payload = (replays / "project-slippi__slippi-js/techTest.slp").read_bytes()
    (folder / "game.slp").write_bytes(payload)
    with ReplayHTTPServer(folder) as server:
        yield server, payload


def test_cut_download_resumes_with_range_and_verifies(served, tmp_path: Path) -> None:
    server, payload = served
    sha = hashlib.sha256(payload).hexdigest()
    cut = len(payload) // 3
    server.control.cut_after_bytes["game.slp"] = cut
    seen: list[int] = []
    result = download(
        server.url("game.slp"),
        tmp_path / "out" / "game.slp",
        sha256=sha,
        backoff_s=0.01,
        chunk_bytes=64 << 10,
        progress=lambda done, total: seen.append(done),
    )
    assert (tmp_path / "out" / "game.slp").read_bytes() == payload
    assert result.sha256 == sha and result.attempts == 2
    # The retry asked only for the bytes that were missing, and nothing was fetched twice.
    assert server.control.requests == [("game.slp", None), ("game.slp", f"bytes={cut}-")]
    assert result.downloaded_bytes == len(payload)
    assert seen[-1] == len(payload)
    assert not (tmp_path / "out" / "game.slp.part").exists()


def test_partial_file_from_an_earlier_run_is_resumed(served, tmp_path: Path) -> None:
    server, payload = served
    dest = tmp_path / "game.slp"
    (tmp_path / "game.slp.part").write_bytes(payload[:1000])
    result = download(server.url("game.slp"), dest, sha256=hashlib.sha256(payload).hexdigest())
    assert result.resumed_from_bytes == 1000
    assert result.downloaded_bytes == len(payload) - 1000
    assert server.control.requests == [("game.slp", "bytes=1000-")]
    assert dest.read_bytes() == payload


def test_wrong_checksum_names_both_sums_and_leaves_nothing(served, tmp_path: Path) -> None:
    server, payload = served
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as error:
        download(server.url("game.slp"), tmp_path / "game.slp", sha256=wrong)
    assert wrong in str(error.value)
    assert hashlib.sha256(payload).hexdigest() in str(error.value)
    assert not (tmp_path / "game.slp").exists() and not (tmp_path / "game.slp.part").exists()


def test_complete_file_is_not_fetched_again(served, tmp_path: Path) -> None:
    server, payload = served
    sha = hashlib.sha256(payload).hexdigest()
    download(server.url("game.slp"), tmp_path / "game.slp", sha256=sha)
    again = download(server.url("game.slp"), tmp_path / "game.slp", sha256=sha)
    assert again.already_present and len(server.control.requests) == 1


def test_local_and_manual_sources_need_no_download(tmp_path: Path, replays: Path) -> None:
    root = DataRoot(tmp_path / "data")
    folder = fetch_source(
        SourceConfig(name="mine", url=(replays / "hohav__peppi").as_uri(), format="folder", description="d"),
        root,
    )
    assert folder.path == replays / "hohav__peppi" and not folder.is_archive and folder.size_bytes > 0
    manual = SourceConfig(
        name="ranked", url="https://drive.example/x", format="7z", manual=True, description="d"
    )
    with pytest.raises(ManualSourceMissingError, match=str(root.source_raw_dir("ranked"))):
        fetch_source(manual, root)
    (root.source_raw_dir("ranked")).mkdir(parents=True)
    (root.source_raw_dir("ranked") / "part1.7z").write_bytes(b"x")
    assert fetch_source(manual, root).path == root.source_raw_dir("ranked")
    assert not root.raw_dir.joinpath("mine").exists()
