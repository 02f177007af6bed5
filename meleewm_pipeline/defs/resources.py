"""Resources: where the data lives and which sources exist, and the automation thresholds.

Fields left at None fall back to the environment when the resource is used (``MELEEWM_DATA``,
``MELEEWM_SOURCES``, ``MELEEWM_REPLAYS``), so ``dagster dev``, ``make run`` and the CLI agree.
"""

import os
from pathlib import Path

import dagster as dg

from meleewm_core.sources import SourceConfig, discover_sources, find_source, local_source
from meleewm_core.store import DataRoot

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS_ENV = "MELEEWM_EXPERIMENTS"


class MeleeDataResource(dg.ConfigurableResource):
    """The data root, the sources file and the experiments folder the assets work on."""

    data_dir: str | None = None
    sources_file: str | None = None
    replay_folder: str | None = None
    experiments_dir: str | None = None
    parse_workers: int | None = None

    def root(self) -> DataRoot:
        return DataRoot.from_env(self.data_dir)

    def sources(self) -> list[SourceConfig]:
        return discover_sources(self.root(), sources_file=self.sources_file, local_folder=self.replay_folder)

    def source(self, name: str) -> SourceConfig:
        if name == local_source().name:
            # Named explicitly (make run), so a missing folder fails with its own clear message.
            return local_source(self.replay_folder)
        return find_source(self.sources(), name)

    def experiment_path(self, experiment: str) -> Path:
        folder = Path(self.experiments_dir or os.environ.get(EXPERIMENTS_ENV) or REPO / "experiments")
        return folder / f"{experiment}.yaml"


class AutomationSettings(dg.ConfigurableResource):
    """Thresholds of the sensors and checks; override per deployment in definitions.py."""

    retrain_min_new_eligible_games: int = 50
    max_parse_failure_rate: float = 0.2
