"""The data commands as a user runs them: in a subprocess, on real replays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meleewm_core.parse import parse_paths, read_ledger
from meleewm_core.store import DataRoot, file_md5

REPO = Path(__file__).resolve().parents[2]
LEDGER_COLUMNS = (
    "source",
    "path",
    "md5",
    "size_bytes",
    "status",
    "error_class",
    "error",
    "parser_version",
    "parsed",
    "num_frames",
    "meta_json",
)


def meleewm(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meleewm_core", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=300,
        **kwargs,
    )


@pytest.mark.parametrize("command", ["parse", "manifest", "info"])
def test_help(command):
    result = meleewm(command, "--help")
    assert result.returncode == 0
    assert "--data" in result.stdout or command == "info"
    assert "usage: meleewm " + command in result.stdout


def test_parse_without_a_folder_says_what_to_set(tmp_path):
    result = meleewm(
        "parse", "--data", str(tmp_path / "data"), env={"MELEEWM_REPLAYS": str(tmp_path / "nope")}
    )
    assert result.returncode == 1
    assert "MELEEWM_REPLAYS" in result.stderr and "nope" in result.stderr


def test_parse_then_manifest_report_failures_and_names(tmp_path, replays):
    data = tmp_path / "data"
    parsed = meleewm(
        "parse",
        str(replays / "altf4__libmelee"),
        str(replays / "hohav__peppi/v2.0.slp"),
        "--data",
        str(data),
        "--source",
        "mixed",
        "--workers",
        "2",
        "--quiet",
    )
    assert parsed.returncode == 0, parsed.stderr  # failures are data, not an error exit
    assert "failed 4" in parsed.stdout
    assert "corrupt_game_3.slp: OSError: invalid data: invalid payload size: 231" in parsed.stdout
    manifest = meleewm("manifest", "--data", str(data))
    assert manifest.returncode == 0, manifest.stderr
    # v2.0.slp (Puff v Fox, Yoshi's Story) and libmelee's test_game_2 (DK v Marth, FD) are eligible
    assert "2 eligible for training" in manifest.stdout
    for name in ("Yoshi's Story", "Final Destination", "Jigglypuff", "Donkey Kong"):
        assert name in manifest.stdout
    assert "PanicException" in manifest.stdout
    assert (data / "manifest.parquet").is_file() and (data / "meta.json").is_file()


def test_parse_defaults_to_the_replay_folder_and_its_name(tmp_path, replays):
    result = meleewm(
        "parse",
        "--data",
        str(tmp_path / "data"),
        "--quiet",
        env={"MELEEWM_REPLAYS": str(replays / "PMcca__go-slippi")},
    )
    assert result.returncode == 0, result.stderr
    assert set(read_ledger(DataRoot(tmp_path / "data"))["source"]) == {"PMcca__go-slippi"}


def test_info_prints_one_replays_metadata(replays):
    replay = replays / "hohav__peppi/ics.slp"
    text = meleewm("info", str(replay))
    assert text.returncode == 0, text.stderr
    assert "Ice Climbers" in text.stdout and "Final Destination" in text.stdout
    as_json = json.loads(meleewm("info", str(replay), "--json").stdout)
    assert as_json["md5"] == file_md5(replay) and as_json["players"][0]["has_follower"]


def test_info_on_a_file_that_is_not_a_replay_fails_clearly(replays):
    result = meleewm("info", str(replays / "altf4__libmelee/malformed/corrupt_game_2.slp"))
    assert result.returncode == 1
    assert "corrupt_game_2.slp" in result.stderr and "OSError" in result.stderr


def _snapshot(root: DataRoot) -> tuple[set, dict]:
    ledger = read_ledger(root).select(LEDGER_COLUMNS)
    rows = {tuple(row.values()) for row in ledger.iter_rows(named=True)}
    games = {p.name: file_md5(p) for p in root.games_dir.iterdir()}
    return rows, games


@pytest.mark.slow
def test_a_run_killed_midway_then_rerun_ends_like_one_clean_run(tmp_path, replays):
    killed_root = DataRoot(tmp_path / "killed")
    command = [
        sys.executable,
        "-m",
        "meleewm_core",
        "parse",
        str(replays),
        "--data",
        str(killed_root.root),
        "--source",
        "shared",
        "--workers",
        "1",
        "--ledger-flush",
        "0.3",
        "--quiet",
    ]
    # its own process group, so the kill takes the workers too (mid-write, possibly)
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        games = list(killed_root.games_dir.glob("*.parquet")) if killed_root.games_dir.exists() else []
        if killed_root.ledger_path.exists() and len(games) >= 40:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    interrupted = len(read_ledger(killed_root))
    assert 0 < interrupted < 150

    rerun = meleewm(
        "parse",
        str(replays),
        "--data",
        str(killed_root.root),
        "--source",
        "shared",
        "--workers",
        "2",
        "--quiet",
    )
    assert rerun.returncode == 0, rerun.stderr

    clean_root = DataRoot(tmp_path / "clean")
    parse_paths([replays], clean_root, source="shared", workers=2, progress=False)
    assert _snapshot(killed_root) == _snapshot(clean_root)
    leftovers = [p for p in killed_root.root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert not leftovers


def test_ruff_check_passes():
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
