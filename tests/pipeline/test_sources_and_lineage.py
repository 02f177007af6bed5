"""The sources file rejects what would break a partition, and lineage reads runs without Dagster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from meleewm_core.cli import main as meleewm_main
from meleewm_core.lineage import LineageError, game_lineage, run_lineage
from meleewm_core.sources import SourcesFileError, discover_sources, load_sources
from meleewm_core.store import DataRoot


def write(path: Path, sources: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


ARCHIVE = {"name": "weekly", "url": "https://example.org/weekly.7z", "format": "7z", "description": "d"}


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        # A name that is not a slug would be an awkward partition key and folder name.
        ({**ARCHIVE, "name": "Weekly #3"}, "string should match pattern"),
        # Only manual sources may lack a URL: anything else could never be fetched.
        ({**ARCHIVE, "url": None}, "needs a url"),
        # An HTTP folder cannot be downloaded.
        ({**ARCHIVE, "format": "folder"}, "must name a .7z or .zip"),
        # A typo in a key fails loudly instead of being ignored.
        ({**ARCHIVE, "sha": "abc"}, "extra inputs are not permitted"),
        # `local` and inbox-* belong to the folders the pipeline finds by itself.
        ({**ARCHIVE, "name": "local"}, "reserved"),
    ],
)
def test_bad_entries_are_refused_naming_the_file(tmp_path: Path, entry: dict, complaint: str) -> None:
    path = write(tmp_path / "sources.yaml", [entry])
    with pytest.raises(SourcesFileError, match=f"(?i){complaint}") as error:
        load_sources(path)
    assert str(path) in str(error.value)


def test_duplicate_names_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourcesFileError, match="appears twice"):
        load_sources(write(tmp_path / "s.yaml", [ARCHIVE, ARCHIVE]))
    with pytest.raises(SourcesFileError, match="MELEEWM_SOURCES"):
        load_sources(tmp_path / "absent.yaml")


def test_discovery_merges_file_local_folder_and_inbox(tmp_path: Path) -> None:
    root = DataRoot(tmp_path / "data")
    (root.inbox_dir / "Club Night").mkdir(parents=True)
    (root.inbox_dir / "genesis-9.zip").write_bytes(b"")
    (root.inbox_dir / "notes.txt").write_text("not a source")
    (root.inbox_dir / ".genesis-10.zip.tmp").write_bytes(b"")  # still being copied in
    (tmp_path / "Slippi").mkdir()
    found = discover_sources(
        root, sources_file=write(tmp_path / "s.yaml", [ARCHIVE]), local_folder=tmp_path / "Slippi"
    )
    assert [(s.name, s.kind, s.format) for s in found] == [
        ("weekly", "download", "7z"),
        ("local", "local", "folder"),
        ("inbox-club-night", "local", "folder"),
        ("inbox-genesis-9", "local", "zip"),
    ]
    # Without the local folder there is no `local` partition to fail.
    assert "local" not in [
        s.name
        for s in discover_sources(root, sources_file=tmp_path / "s.yaml", local_folder=tmp_path / "nowhere")
    ]


def test_lineage_of_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    with pytest.raises(LineageError, match="no run manifest"):
        run_lineage(tmp_path)
    assert meleewm_main(["lineage", str(tmp_path)]) == 1
    assert "no run manifest" in capsys.readouterr().err
    assert meleewm_main(["lineage"]) == 2  # neither RUN_DIR nor --game


def test_game_lineage_lists_roles_across_runs(tmp_path: Path, capsys) -> None:
    root = DataRoot(tmp_path)
    for experiment, run_id, game_md5s in (
        ("baseline", "r1", {"train": ["aa", "bb"], "val": ["cc"]}),
        ("baseline", "r2", {"train": ["cc"], "val": ["aa"]}),
        ("old", "r0", ["aa"]),  # the reference implementation's flat list
    ):
        folder = root.runs_dir / experiment / run_id
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(
            json.dumps({"run_id": run_id, "experiment": experiment, "game_md5s": game_md5s})
        )
    uses = {(u.experiment, u.run_id): u.role for u in game_lineage("aa", root)}
    assert uses == {("baseline", "r1"): "train", ("baseline", "r2"): "val", ("old", "r0"): "used"}
    assert meleewm_main(["lineage", "--game", "CC", "--data", str(root.root)]) == 0
    out = capsys.readouterr().out
    assert "2 run(s)" in out and "baseline/r1" in out and "baseline/r2" in out
    assert meleewm_main(["lineage", "--game", "dd", "--data", str(root.root)]) == 1
