"""Archive extraction: real replays in real .zip/.7z files; hostile archives are refused."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import py7zr
import pytest

from meleewm_core.archives import CorruptArchiveError, UnsafeArchiveError, extract_archive
from meleewm_core.parse import parse_paths, read_ledger
from meleewm_core.store import DataRoot, file_md5

REPLAYS = ("hohav__peppi/v3.12.slp", "project-slippi__slippi-js/unranked_game1.slp")


@pytest.fixture
def replay_files(replays: Path) -> list[Path]:
    return [replays / name for name in REPLAYS]


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        for name, data in entries.items():
            handle.writestr(name, data)
    return path


def test_zip_keeps_only_replays_in_their_folders(tmp_path, replay_files):
    archive = _zip(
        tmp_path / "dump.zip",
        {
            "Genesis/pools/a.slp": replay_files[0].read_bytes(),
            "Genesis/top8/b.slp": replay_files[1].read_bytes(),
            "Genesis/readme.txt": b"not a replay",
        },
    )
    summary = extract_archive(archive, tmp_path / "out")
    assert (summary.extracted, summary.ignored_entries) == (2, 1)
    assert [Path(f).relative_to(tmp_path / "out").as_posix() for f in summary.files] == [
        "Genesis/pools/a.slp",
        "Genesis/top8/b.slp",
    ]
    assert file_md5(tmp_path / "out/Genesis/pools/a.slp") == file_md5(replay_files[0])
    assert not (tmp_path / "out/Genesis/readme.txt").exists()
    again = extract_archive(archive, tmp_path / "out")
    assert (again.extracted, again.already_present) == (0, 2)


def test_7z_keeps_only_replays_in_their_folders(tmp_path, replay_files):
    archive = tmp_path / "dump.7z"
    with py7zr.SevenZipFile(archive, "w") as handle:
        handle.write(replay_files[0], "set1/a.slp")
        handle.write(replay_files[1], "set2/deeper/b.slp")
        handle.writestr(b"notes", "notes.md")
    summary = extract_archive(archive, tmp_path / "out")
    assert (summary.extracted, summary.ignored_entries) == (2, 1)
    assert file_md5(tmp_path / "out/set2/deeper/b.slp") == file_md5(replay_files[1])
    assert [p.name for p in (tmp_path / "out").iterdir()] and not list((tmp_path / "out").glob(".extract-*"))


@pytest.mark.parametrize(
    ("entry", "reason"),
    [("../escape.slp", "'..'"), ("/etc/cron.d/x.slp", "absolute"), ("ok/../../x.slp", "'..'")],
)
def test_entries_escaping_the_destination_are_refused_and_the_rest_extracted(tmp_path, entry, reason):
    archive = _zip(tmp_path / "evil.zip", {"fine.slp": b"x", entry: b"payload"})
    summary = extract_archive(archive, tmp_path / "sandbox" / "out")
    assert [(r.entry, reason in r.reason) for r in summary.refused_entries] == [(entry, True)]
    assert summary.files == [str(tmp_path / "sandbox" / "out" / "fine.slp")]
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {Path("evil.zip"), Path("sandbox/out/fine.slp")}


def test_symlink_entry_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        info = zipfile.ZipInfo("game.slp")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(info, "/etc/passwd")
    summary = extract_archive(archive, tmp_path / "out")
    assert [(r.entry, r.reason) for r in summary.refused_entries] == [("game.slp", "symbolic link")]
    assert summary.files == [] and not (tmp_path / "out" / "game.slp").exists()


def test_zip_bomb_is_refused(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"huge.slp": bytes(64 << 20)})
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(UnsafeArchiveError, match="compression ratio"):
        extract_archive(archive, tmp_path / "out")


def test_corrupt_archive_raises_a_clear_error(tmp_path, replay_files):
    archive = _zip(tmp_path / "cut.zip", {"a.slp": replay_files[0].read_bytes()})
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(CorruptArchiveError, match="cut.zip"):
        extract_archive(archive, tmp_path / "out")


def test_parse_accepts_an_archive(tmp_path, replay_files):
    archive = _zip(tmp_path / "weekly.zip", {f"w1/{p.name}": p.read_bytes() for p in replay_files})
    root = DataRoot(tmp_path / "data")
    summary = parse_paths([archive], root, source="weekly", workers=1, progress=False)
    assert summary.parsed == 2
    ledger = read_ledger(root)
    extracted = root.source_extracted_dir("weekly")
    assert all(Path(p).is_relative_to(extracted) for p in ledger["path"])
    assert sorted(ledger["md5"]) == sorted(file_md5(p) for p in replay_files)


def test_leftovers_of_an_interrupted_extraction_are_removed(tmp_path, replay_files):
    archive = _zip(tmp_path / "dump.zip", {"set/a.slp": replay_files[0].read_bytes()})
    out = tmp_path / "out"
    (out / "set").mkdir(parents=True)
    (out / "set" / ".a.slp.abc123.tmp").write_bytes(b"half a file")
    (out / ".extract-xyz" / "set").mkdir(parents=True)
    (out / ".extract-xyz" / "set" / "b.slp").write_bytes(b"staged, never moved")
    summary = extract_archive(archive, out)
    assert [Path(f).name for f in summary.files] == ["a.slp"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["set", "set/a.slp"]
