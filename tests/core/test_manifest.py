"""The manifest: one row per unique game, duplicates collapsed, eligibility with a reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from meleewm_core.manifest import build_manifest, read_manifest
from meleewm_core.parse import parse_paths
from meleewm_core.store import DataRoot

NETPLAY_GAME = "project-slippi__slippi-js/unranked_game1.slp"


def _second_players_copy(original: Path, copy: Path) -> None:
    """The same netplay match as saved by the other player: identical game, different file bytes.
    Here the metadata clock differs by one second (each console stamps its own startAt)."""
    data = bytearray(original.read_bytes())
    stamp = data.find(b"2022-12-21T02:26:32Z")
    assert stamp > 0, "startAt not found where expected"
    data[stamp : stamp + 20] = b"2022-12-21T02:26:33Z"
    copy.write_bytes(bytes(data))


def test_parsed_training_replays_are_all_eligible(parsed_root):
    manifest = read_manifest(parsed_root)
    assert manifest.height == 6
    assert manifest["eligible"].all(), manifest.filter(~manifest["eligible"])["ineligible_reason"].to_list()
    assert manifest["ineligible_reason"].is_null().all()
    assert set(manifest["sources"].explode()) == {"shared"}
    assert (manifest["num_frames"] >= 3600).all()


def test_meta_json_matches_manifest_parquet(parsed_root):
    meta = json.loads(parsed_root.meta_json_path.read_text())
    manifest = read_manifest(parsed_root)
    assert isinstance(meta, list) and [row["md5"] for row in meta] == manifest["md5"].to_list()
    for row in meta:
        assert {"md5", "sources", "num_frames", "stage", "players", "eligible", "ineligible_reason"} <= set(
            row
        )
        assert len(row["players"]) == 2 and all(1 <= p["port"] <= 4 for p in row["players"])


def test_same_file_under_two_sources_is_one_game_with_both(tmp_path, replays):
    replay = replays / "hohav__peppi/v2.0.slp"
    elsewhere = tmp_path / "backup" / "copy.slp"
    elsewhere.parent.mkdir()
    shutil.copy(replay, elsewhere)
    root = DataRoot(tmp_path / "data")
    parse_paths([replay], root, source="tournament", workers=1, progress=False)
    second = parse_paths([elsewhere], root, source="my-slippi", workers=1, progress=False)
    assert second.parsed == 0  # the md5 is already parsed: nothing is read twice
    summary = build_manifest(root)
    manifest = read_manifest(root)
    assert (summary.games, manifest.height) == (1, 1)
    row = manifest.row(0, named=True)
    assert row["sources"] == ["my-slippi", "tournament"]
    assert row["paths"] == sorted([str(replay), str(elsewhere.resolve())])


def test_netplay_match_saved_by_both_players_keeps_one(tmp_path, replays):
    original = replays / NETPLAY_GAME
    folder = tmp_path / "other-player"
    folder.mkdir()
    _second_players_copy(original, folder / "Game_copy.slp")
    root = DataRoot(tmp_path / "data")
    parse_paths([original, folder], root, source="netplay", workers=1, progress=False)
    summary = build_manifest(root)
    manifest = read_manifest(root)
    assert manifest.height == 2 and summary.games == 1 and summary.duplicates == 1
    kept = manifest.filter(manifest["duplicate_of"].is_null()).row(0, named=True)
    dropped = manifest.filter(manifest["duplicate_of"].is_not_null()).row(0, named=True)
    assert dropped["duplicate_of"] == kept["md5"]
    assert kept["duplicate_md5s"] == [dropped["md5"]]
    assert kept["md5"] == min(kept["md5"], dropped["md5"])  # equal length: lowest md5 kept
    assert not dropped["eligible"] and dropped["ineligible_reason"].startswith("duplicate: of " + kept["md5"])


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("hohav__peppi/game.slp", "not human"),  # Marth v Fox CPU
        ("PMcca__go-slippi/4-players.slp", "player count"),
        ("project-slippi__slippi-js/doubles.slp", "teams"),
        ("project-slippi__slippi-js/unranked_game1.slp", "too short"),  # 169 frames
        ("project-slippi__slippi-js/gameModeTest/Tiny.slp", "not versus mode"),  # scene 29
        ("project-slippi__slippi-js/gameModeTest/Adventure.slp", "unknown stage"),  # stage 81
        ("altf4__libmelee/unsupported/test_game_1.slp", "not parsed"),  # 3.6.1: metadata only
    ],
)
def test_ineligible_games_say_why(tmp_path, replays, name, rule):
    root = DataRoot(tmp_path)
    parse_paths([replays / name], root, source="s", workers=1, progress=False)
    build_manifest(root)
    row = read_manifest(root).row(0, named=True)
    assert not row["eligible"]
    assert rule in [reason.split(":")[0] for reason in row["ineligible_reason"].split("; ")], row[
        "ineligible_reason"
    ]


def test_summary_counts_failures_by_cause(tmp_path, replays):
    root = DataRoot(tmp_path)
    parse_paths([replays / "altf4__libmelee"], root, source="libmelee", workers=2, progress=False)
    summary = build_manifest(root)
    assert summary.ledger_files == 5 and summary.failed_files == 4
    # two libmelee files are not replays at all: the same header error, counted once each
    assert sum(summary.failures_by_cause.values()) == 4
    assert any(cause.startswith("PanicException") for cause in summary.failures_by_cause)
    assert "failed files by cause" in summary.describe()
