"""`make run`'s entry point on the shared replays: a fresh DAGSTER_HOME, ingest, train, evaluate."""

from __future__ import annotations

from pathlib import Path

from meleewm_pipeline.run_all import main


def test_make_run_in_a_fresh_dagster_home_prints_the_checkpoint_and_report(
    tmp_path, replays, monkeypatch, capsys
):
    home = tmp_path / "not-yet" / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MELEEWM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MELEEWM_REPLAYS", str(replays))

    assert main(["--epochs", "1", "--no-wandb"]) == 0

    out = capsys.readouterr().out
    printed = {
        key: Path(out.split(f"{key}: ")[1].split()[0]) for key in ("checkpoint", "run manifest", "evaluation")
    }
    assert all(path.is_file() for path in printed.values()), printed
    assert printed["checkpoint"].parent.parent.name == "baseline-v22"
    assert home.is_dir() and any(home.iterdir())
