"""Shards: written from the manifest, appended without re-encoding, split stable by MD5."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from meleewm_core.config import EncodingConfig
from meleewm_core.encoding import EncodingSpec
from meleewm_core.manifest import build_manifest
from meleewm_core.parse import parse_paths
from meleewm_core.shards import ShardError, check_shard_shapes, encode_shards, read_index, split_of
from meleewm_core.store import DataRoot


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_append_new_games_keeps_old_shards_and_splits(tmp_path, training_replays):
    root = DataRoot(tmp_path)
    parse_paths(training_replays[:3], root, source="first", workers=2, progress=False)
    build_manifest(root)
    first = encode_shards(root, EncodingConfig(), progress=False)
    assert first.num_games == 3 and first.new_shards == ["shard-00000"]
    old_files = {p.name: _digest(p) for p in first.path.glob("shard-*.npy")}
    old_split = {g.md5: g.split for g in read_index(first.path).games}

    parse_paths(training_replays[3:], root, source="second", workers=2, progress=False)
    build_manifest(root)
    second = encode_shards(root, EncodingConfig(), progress=False)

    assert second.path == first.path
    assert second.num_games == 6 and second.new_games == 3 and second.new_shards == ["shard-00001"]
    assert {p.name: _digest(p) for p in second.path.glob("shard-00000.*")} == old_files
    index = read_index(second.path)
    assert {g.md5: g.split for g in index.games if g.md5 in old_split} == old_split
    assert all(g.split == split_of(g.md5) for g in index.games)
    assert second.data_fingerprint != first.data_fingerprint

    # Frames in the index match the arrays, game by game.
    floats = {s.name: np.load(second.path / f"{s.name}.floats.npy", mmap_mode="r") for s in index.shards}
    assert sum(g.num_frames for g in index.games) == sum(len(f) for f in floats.values()) == second.num_frames

    # Nothing new: nothing written.
    again = encode_shards(root, EncodingConfig(), progress=False)
    assert again.new_games == 0 and again.new_shards == []


def test_split_depends_on_md5_alone():
    md5s = [hashlib.md5(str(i).encode()).hexdigest() for i in range(2000)]
    splits = [split_of(m) for m in md5s]
    assert splits == [split_of(m) for m in reversed(md5s)][::-1]
    assert 0.87 < splits.count("train") / len(splits) < 0.93


def test_shape_check_names_file_shapes_and_flags(tmp_path, parsed_root):
    import shutil

    root = DataRoot(tmp_path / "root")
    shutil.copytree(parsed_root.root, root.root)
    shard_set = encode_shards(root, EncodingConfig(), progress=False)
    index = read_index(shard_set.path)
    with pytest.raises(
        ShardError,
        match=r"shard-00000\.floats\.npy: shape \(\d+, 58\).*expected \(\d+, 56\).*state_age_as_embed=True",
    ):
        check_shard_shapes(shard_set.path, index, EncodingSpec(EncodingConfig(state_age_as_embed=True)))


def test_encode_command_reports_shards_splits_and_anomaly_counts(tmp_path, parsed_root, capsys):
    import shutil
    from pathlib import Path

    from meleewm_core.cli import main

    shutil.copytree(parsed_root.root, tmp_path / "root")
    config = Path(__file__).resolve().parents[2] / "experiments" / "baseline-v22.yaml"
    assert main(["encode", "--data", str(tmp_path / "root"), "--config", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "shards: " in out and "games: 6 (" in out and "data fingerprint: " in out
    # BH9 (Slippi 1.x) has no velocities: the nulls are filled by rule and counted, not hidden.
    assert "anomalies (mapped by rule, counted): " in out and "self_x_air: null=" in out
    assert main(["encode", "--data", str(tmp_path / "root"), "--config", str(config), "--quiet"]) == 0
    assert "new this run: 0" in capsys.readouterr().out


def test_encode_command_encodes_the_experiments_game_selection(tmp_path, parsed_root, capsys):
    import shutil

    import yaml

    from meleewm_core.cli import main
    from meleewm_core.config import load_experiment
    from meleewm_core.train import ensure_shards

    root = DataRoot(tmp_path / "root")
    shutil.copytree(parsed_root.root, root.root)
    config = tmp_path / "every-pair.yaml"
    config.write_text(yaml.safe_dump({"train": {"games": "two_players"}}))
    assert main(["encode", "--data", str(root.root), "--config", str(config), "--quiet"]) == 0
    printed = capsys.readouterr().out.split("shards: ")[1].split("\n")[0]
    # The folder training with this experiment reads, not the eligible games' one.
    assert printed == str(ensure_shards(load_experiment(config), root, progress=False))
    assert printed != str(
        ensure_shards(load_experiment(config, {"train.games": "eligible"}), root, progress=False)
    )


def test_large_encodes_split_into_bounded_shards_that_stream(tmp_path, parsed_root):
    import shutil

    from meleewm_core.data import FrameData, MemmapBatches

    root = DataRoot(tmp_path / "root")
    shutil.copytree(parsed_root.root, root.root)
    shard_set = encode_shards(root, EncodingConfig(), progress=False, shard_frames=20_000)
    index = read_index(shard_set.path)
    assert len(index.shards) >= 3 and shard_set.new_shards == [s.name for s in index.shards]
    # A shard closes at the first game that starts past the bound: no game is split.
    assert all(g.offset < 20_000 for g in index.games)
    data = FrameData.from_shards(shard_set.path, EncodingSpec(EncodingConfig()), mmap=True, train_percent=50)
    batches = MemmapBatches(data, "train", batch_size=256, context_len=10)
    assert (
        sum(len(b.float_tgt) for b in batches)
        == batches.num_windows
        == sum(g.num_frames - 10 for g in data.games if g.split == "train")
    )
