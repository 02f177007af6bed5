"""Parsing real replays: one session-scoped parse of the whole shared corpus, then one test per
promise the games files and the ledger make. One commented case per Slippi quirk."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meleewm_core.parse import (
    FRAME_COLUMNS,
    METADATA_KEY,
    PARSER_VERSION,
    PORT_DATA_COLUMNS,
    GameMeta,
    parse_paths,
    read_game,
    read_ledger,
)
from meleewm_core.store import DataRoot

# peppi-py 0.8.6 parses this file from malformed/ (SOURCES.md: "Files in malformed/ that peppi-py
# nevertheless parses"): it is cut mid-frame but its frames and Game End are consistent.
PARSEABLE_MALFORMED = {"hohav__py-slippi/malformed/severed_frame.slp"}


@pytest.fixture(scope="session")
def corpus(replays: Path, tmp_path_factory: pytest.TempPathFactory):
    root = DataRoot(tmp_path_factory.mktemp("corpus"))
    summary = parse_paths([replays], root, source="shared", workers=2, progress=False)
    ledger = {
        Path(row["path"]).relative_to(replays).as_posix(): row
        for row in read_ledger(root).iter_rows(named=True)
    }
    return root, summary, ledger


def _meta(row: dict) -> GameMeta:
    return GameMeta.model_validate_json(row["meta_json"])


def _game(root: DataRoot, row: dict) -> pa.Table:
    return pq.read_table(root.game_path(row["md5"]))


def _is_bad_folder(relative: str) -> bool:
    return "/malformed/" in relative or "/unsupported/" in relative


def test_every_slp_gets_exactly_one_ledger_row(corpus, replays):
    root, summary, ledger = corpus
    on_disk = {p.relative_to(replays).as_posix() for p in replays.rglob("*.slp")}
    assert set(ledger) == on_disk
    assert summary.files == len(on_disk)
    assert {row["parser_version"] for row in ledger.values()} == {PARSER_VERSION}


def test_every_well_formed_replay_parses(corpus):
    root, _, ledger = corpus
    good = {
        name: row for name, row in ledger.items() if not _is_bad_folder(name) or name in PARSEABLE_MALFORMED
    }
    failed = {
        name: f"{row['error_class']}: {row['error']}" for name, row in good.items() if row["status"] != "ok"
    }
    assert not failed
    for row in good.values():
        assert row["parsed"] and root.game_path(row["md5"]).is_file()


def test_every_malformed_or_unsupported_file_is_a_failed_row_with_its_cause(corpus):
    _, summary, ledger = corpus
    bad = {
        name: row for name, row in ledger.items() if _is_bad_folder(name) and name not in PARSEABLE_MALFORMED
    }
    assert len(bad) >= 15
    for name, row in bad.items():
        assert row["status"] == "failed", name
        assert row["error_class"] in {"OSError", "PanicException"}, (name, row["error_class"])
        assert row["error"], name
    # the summary names each failure and its cause
    assert {Path(f.path).name for f in summary.failures} == {Path(name).name for name in bad}


def test_a_rust_panic_is_a_row_not_a_crash(corpus):
    _, _, ledger = corpus
    row = ledger["project-slippi__slippi-js/unsupported/gameModeTest/3-Minute.slp"]
    assert (row["status"], row["error_class"]) == ("failed", "PanicException")
    assert "index out of bounds" in row["error"]


def test_slippi_3_6_replay_keeps_its_metadata_marked_not_parsed(corpus):
    # every 3.0 <= version < 3.7 replay panics on a full parse; skip_frames still reads the header
    _, _, ledger = corpus
    row = ledger["altf4__libmelee/unsupported/test_game_1.slp"]
    assert row["status"] == "failed" and not row["parsed"]
    meta = _meta(row)
    assert not meta.parsed and "StructArray" in meta.not_parsed_reason
    assert meta.slippi_version == "3.6.1" and meta.stage == 8
    assert [(p.port, p.character, p.type) for p in meta.players] == [(1, 2, "human"), (2, 2, "human")]


def test_rollback_frames_resolve_to_one_row_per_frame(corpus):
    # netplay replays repeat frame ids; the last row per id is the finalized frame
    root, _, ledger = corpus
    row = ledger["project-slippi__slippi-js/rollbackFrameTest.slp"]
    meta = _meta(row)
    assert (meta.num_frame_rows, meta.num_frames, meta.rollback_rows_dropped) == (13569, 9277, 4292)
    frames = _game(root, row).column("frame").to_numpy()
    assert len(frames) == 9277 and frames.dtype == np.int32
    assert np.all(np.diff(frames) == 1) and frames[0] == -123
    # the documented reader gives the same frames as a polars DataFrame
    assert read_game(root, row["md5"], columns=["frame"])["frame"].to_list() == frames.tolist()


def test_frame_rises_by_one_in_every_game(corpus):
    root, _, ledger = corpus
    for name, row in ledger.items():
        if row["status"] == "ok":
            frames = pq.read_table(root.game_path(row["md5"]), columns=["frame"]).column("frame").to_numpy()
            assert np.all(np.diff(frames) == 1), name
            assert len(frames) == _meta(row).num_frames, name


def test_every_occupied_port_has_the_full_leader_column_set(corpus):
    # a 1.0 replay lacks state_age..instance_id; the columns are there, null. Neither character
    # (Marth v Fox) has a follower, so no follower columns; peppi returns no frame-level columns
    # (start/end/items) for a replay this old, so none are written.
    root, _, ledger = corpus
    row = ledger["hohav__peppi/game.slp"]
    table = _game(root, row)
    expected = ["frame"]
    for port in ("P1", "P2"):
        expected += [f"ports.{port}.leader.{name}" for name, _ in PORT_DATA_COLUMNS]
    assert table.column_names == expected
    assert table.column("ports.P1.leader.post.velocities.self_x_air").null_count == table.num_rows
    assert table.column("ports.P1.leader.post.position.x").null_count == 0
    assert table.schema.field("ports.P1.leader.post.state").type == pa.uint16()


def test_newest_format_keeps_every_frame_level_column(corpus):
    root, _, ledger = corpus
    table = _game(root, ledger["hohav__peppi/v3.18.slp"])
    assert table.column_names[-len(FRAME_COLUMNS) :] == [name for name, _ in FRAME_COLUMNS]
    assert table.schema.field("item").type == dict(FRAME_COLUMNS)["item"]
    assert table.column("start.random_seed").null_count == 0


def test_canonical_columns_match_what_peppi_returns_for_the_newest_format(replays):
    from peppi_py import _peppi

    raw = _peppi.read_slippi(str(replays / "hohav__peppi/v3.18.slp"), False)
    flat = pa.Table.from_struct_array(raw.frames)
    while any(pa.types.is_struct(c.type) for c in flat.columns):
        flat = flat.flatten()
    leader = [
        (n.removeprefix("ports.P1.leader."), flat.schema.field(n).type)
        for n in flat.column_names
        if n.startswith("ports.P1.leader.")
    ]
    assert leader == list(PORT_DATA_COLUMNS)
    frame_level = [n for n in flat.column_names if not n.startswith("ports.") and n != "id"]
    assert frame_level == [name for name, _ in FRAME_COLUMNS]


def test_doubles_keep_all_four_ports_with_eliminated_players_null(corpus):
    root, _, ledger = corpus
    row = ledger["project-slippi__slippi-js/doubles.slp"]
    table = _game(root, row)
    meta = _meta(row)
    assert [p.port for p in meta.players] == [1, 2, 3, 4] and meta.is_teams
    for port in ("P1", "P2", "P3", "P4"):
        assert f"ports.{port}.leader.post.position.x" in table.column_names
    # P1 is eliminated before the end: its rows are null from then on (534 rows, SOURCES.md)
    assert table.column("ports.P1.leader.post.state").null_count == 534
    # only a column that holds a null is a nullable parquet field (the writer then skips the
    # definition levels of every other column)
    assert table.schema.field("ports.P1.leader.post.state").nullable
    assert not table.schema.field("frame").nullable
    assert all(
        table.schema.field(name).nullable == (table.column(name).null_count > 0)
        for name in table.column_names
    )


def test_ice_climbers_keep_nana(corpus):
    root, _, ledger = corpus
    row = ledger["hohav__peppi/ics.slp"]
    table = _game(root, row)
    meta = _meta(row)
    assert [(p.character, p.has_follower) for p in meta.players] == [(14, True), (15, False)]
    nana = table.column("ports.P1.follower.post.character").drop_null().to_pylist()
    assert nana and set(nana) == {11}  # internal id 11 = Nana
    # Nana has the leader's full column set; Jigglypuff (P2) has no follower columns at all
    assert [n for n in table.column_names if n.startswith("ports.P1.follower.")] == [
        f"ports.P1.follower.{name}" for name, _ in PORT_DATA_COLUMNS
    ]
    assert not [n for n in table.column_names if n.startswith("ports.P2.follower.")]


def test_garbage_trigger_values_are_nulled_and_counted(corpus):
    # Slippi 1.0 replays carry 3.78e22 in triggers_physical.r
    root, _, ledger = corpus
    row = ledger["hohav__peppi/buttons_abxy.slp"]
    meta = _meta(row)
    column = "ports.P1.leader.pre.triggers_physical.r"
    assert meta.cleaned_values.get(column, 0) > 0
    table = _game(root, row)
    values = table.column(column)
    assert values.null_count == meta.cleaned_values[column]
    assert (pa.compute.max(values).as_py() or 0.0) <= 1.0
    # the rule touches only the garbage: the left trigger of the same replay is intact
    assert table.column("ports.P1.leader.pre.triggers_physical.l").null_count == 0


def test_kirby_action_states_are_kept(corpus):
    # Kirby's copy-ability action states reach 535: real values, below the flag limit, untouched
    root, _, ledger = corpus
    row = ledger["project-slippi__slippi-js/moveTest/id_46.slp"]
    meta = _meta(row)
    table = _game(root, row)
    assert pa.compute.max(table.column("ports.P1.leader.post.state")).as_py() == 535
    assert not meta.cleaned_values and not meta.flagged_values


def test_games_file_carries_its_metadata(corpus):
    root, _, ledger = corpus
    row = ledger["hohav__peppi/v3.16.slp"]
    stored = json.loads(pq.read_schema(root.game_path(row["md5"])).metadata[METADATA_KEY])
    assert stored == json.loads(row["meta_json"])
    meta = GameMeta.model_validate(stored)
    assert meta.md5 == row["md5"] and meta.match_id == "mode.unranked-2024-02-15T14:37:23.22-0"
    assert meta.players[0].netplay_code == "CLWN#889"  # full-width '＃' normalised


@pytest.mark.parametrize(
    ("name", "winner", "rule"),
    [
        # 3-player FFA won by port 3: the end placements decide
        ("project-slippi__slippi-js/placementsTest/ffa_1p2p3p_winner_3p.slp", 3, "placement"),
        # P1 quit (LRAS) a 2-player game: P2 wins although peppi reports P1 placed first
        ("hohav__peppi/v3.18.slp", 2, "lras"),
    ],
)
def test_winner_from_game_end(corpus, name, winner, rule):
    _, _, ledger = corpus
    meta = _meta(ledger[name])
    assert (meta.winner_port, meta.winner_rule) == (winner, rule)


def test_winner_from_last_frame_stocks_without_placements(corpus):
    # Slippi 3.9 writes no placements: the player with more stocks on the last frame wins
    root, _, ledger = corpus
    row = ledger["project-slippi__slippi-js/techTest.slp"]
    meta = _meta(row)
    table = _game(root, row)
    stocks = {p: table.column(f"ports.P{p}.leader.post.stocks").drop_null()[-1].as_py() for p in (1, 2)}
    assert stocks[1] != stocks[2]
    assert (meta.winner_port, meta.winner_rule) == (max(stocks, key=stocks.get), "stocks")


def test_rerun_parses_nothing_and_force_parses_again(tmp_path, training_replays):
    root = DataRoot(tmp_path)
    first = parse_paths(training_replays[:2], root, source="s", workers=1, progress=False)
    assert first.parsed == 2
    written = {p: p.stat().st_mtime_ns for p in root.games_dir.iterdir()}
    again = parse_paths(training_replays[:2], root, source="s", workers=1, progress=False)
    assert (again.parsed, again.unchanged, again.failed) == (0, 2, 0)
    assert {p: p.stat().st_mtime_ns for p in root.games_dir.iterdir()} == written
    forced = parse_paths(training_replays[:2], root, source="s", workers=1, force=True, progress=False)
    assert forced.parsed == 2


def test_a_games_file_written_before_a_lost_ledger_flush_is_trusted(tmp_path, training_replays):
    # a kill between the games write and the ledger flush: the next run finds the games file by md5
    root = DataRoot(tmp_path)
    parse_paths(training_replays[:1], root, source="s", workers=1, progress=False)
    written = next(root.games_dir.iterdir()).stat().st_mtime_ns
    root.ledger_path.unlink()
    again = parse_paths(training_replays[:1], root, source="s", workers=1, progress=False)
    assert (again.parsed, again.unchanged) == (0, 1)
    assert next(root.games_dir.iterdir()).stat().st_mtime_ns == written
    assert read_ledger(root)["status"].to_list() == ["ok"]


def test_a_hung_replay_times_out_and_the_batch_goes_on(tmp_path, training_replays):
    # a timeout far below one parse stands in for a hang: the worker is killed, the row says why
    root = DataRoot(tmp_path)
    summary = parse_paths(training_replays[:2], root, source="s", workers=1, timeout_s=0.001, progress=False)
    assert summary.failed == 2
    assert {f.error_class for f in summary.failures} == {"Timeout"}
    # a timeout says nothing about the file: the next run tries it again
    retry = parse_paths(training_replays[:2], root, source="s", workers=1, progress=False)
    assert retry.parsed == 2
    assert set(read_ledger(root)["status"]) == {"ok"}


def test_empty_file_is_skipped(tmp_path, training_replays):
    replay_dir = tmp_path / "replays"
    replay_dir.mkdir()
    (replay_dir / "recording.slp").write_bytes(b"")
    shutil.copy(training_replays[0], replay_dir / "game.slp")
    root = DataRoot(tmp_path / "data")
    summary = parse_paths([replay_dir], root, source="s", workers=1, progress=False)
    assert (summary.parsed, summary.skipped) == (1, 1)
    statuses = dict(
        zip(
            read_ledger(root)["path"].map_elements(lambda p: Path(p).name, return_dtype=str),
            read_ledger(root)["status"],
            strict=True,
        )
    )
    assert statuses == {"game.slp": "ok", "recording.slp": "skipped"}


def test_missing_path_raises_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.slp"):
        parse_paths([tmp_path / "nowhere.slp"], DataRoot(tmp_path), source="s", progress=False)


def _load_fetch_script():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "fetch_test_replays.py"
    spec = importlib.util.spec_from_file_location("fetch_test_replays", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_lock_file_pins_every_replay_with_its_md5(replays):
    from meleewm_core.store import file_md5

    fetch = _load_fetch_script()
    pinned = {item.relative_path: item for item in fetch.read_lock(fetch.DEFAULT_LOCK)}
    on_disk = {p.relative_to(replays).as_posix(): p for p in replays.rglob("*.slp")}
    assert set(on_disk) <= set(pinned)
    for name, path in on_disk.items():
        assert (pinned[name].size_bytes, pinned[name].md5) == (path.stat().st_size, file_md5(path)), name


def test_fetch_script_downloads_verifies_and_skips_correct_files(tmp_path, replays, monkeypatch):
    # a local "GitHub" served through file:// URLs: same code path as raw.githubusercontent.com
    import zipfile

    from meleewm_core.store import file_md5

    fetch = _load_fetch_script()
    commit = "0" * 40
    served = tmp_path / "github" / "owner" / "repo" / commit
    (served / "tests").mkdir(parents=True)
    shutil.copy(replays / "hohav__peppi/ics.slp", served / "tests" / "ics.slp")
    with zipfile.ZipFile(served / "bundle.zip", "w") as bundle:
        bundle.write(replays / "hohav__peppi/v3.13.slp", "inner/v3.13.slp")
    lock = tmp_path / "test.lock"
    rows = [
        ("peppi/ics.slp", "tests/ics.slp", replays / "hohav__peppi/ics.slp"),
        ("peppi/v3.13.slp", "bundle.zip!inner/v3.13.slp", replays / "hohav__peppi/v3.13.slp"),
    ]
    lock.write_text(
        "# test lock\n"
        + "".join(
            f"{rel}\towner/repo\t{path}\t{commit}\t{src.stat().st_size}\t{file_md5(src)}\n"
            for rel, path, src in rows
        )
    )
    monkeypatch.setattr(fetch, "RAW_URL", (tmp_path / "github").as_uri() + "/{repo}/{commit}/{path}")
    target = tmp_path / "replays"
    assert fetch.main([str(target), "--lock", str(lock)]) == 0
    assert file_md5(target / "peppi/v3.13.slp") == file_md5(replays / "hohav__peppi/v3.13.slp")
    before = (target / "peppi/ics.slp").stat().st_mtime_ns
    assert fetch.main([str(target), "--lock", str(lock)]) == 0
    assert (target / "peppi/ics.slp").stat().st_mtime_ns == before  # correct files are not fetched again
    # a served file that no longer matches its pin is refused and nothing replaces the good copy
    (served / "tests" / "ics.slp").write_bytes(b"tampered")
    (target / "peppi/ics.slp").unlink()
    assert fetch.main([str(target), "--lock", str(lock)]) == 1
    assert not (target / "peppi/ics.slp").exists()
    assert not list(target.rglob("*.tmp"))
