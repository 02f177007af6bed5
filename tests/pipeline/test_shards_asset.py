"""The ``encoded_shards`` asset encodes the games the experiment trains on, into the folder training reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from meleewm_core.config import load_experiment
from meleewm_core.shards import read_index
from meleewm_core.store import DataRoot
from meleewm_core.train import ensure_shards
from meleewm_pipeline.defs.resources import MeleeDataResource
from meleewm_pipeline.defs.shards.assets import encoded_shards


def test_encoded_shards_follow_the_experiments_game_selection(
    tmp_path: Path, parsed_root, experiments_dir
) -> None:
    root = DataRoot(tmp_path / "data")
    shutil.copytree(parsed_root.root, root.root)
    melee = MeleeDataResource(data_dir=str(root.root), experiments_dir=str(experiments_dir))
    config = {"experiment": "tiny", "overrides": {"train.games": "two_players"}}
    result = dg.materialize(
        [encoded_shards],
        resources={"melee": melee},
        run_config={"ops": {"encoded_shards": {"config": config}}},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("encoded_shards")[0].metadata
    folder = Path(metadata["path"].value)
    # The folder that training with this experiment reads, not the eligible games' (a selection of
    # its own, even where both hold the same games, as these test replays do).
    experiment = load_experiment(experiments_dir / "tiny.yaml", {"train.games": "two_players"})
    assert folder == ensure_shards(experiment, root, progress=False)
    eligible = ensure_shards(load_experiment(experiments_dir / "tiny.yaml"), root, progress=False)
    assert folder != eligible
    assert metadata["games"].value == len(read_index(folder).games)
