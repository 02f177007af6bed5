"""The run configuration of ``encoded_shards`` and ``world_model``: an experiment name plus overrides.

It mirrors the experiment YAML (``experiments/<name>.yaml``, validated by
``meleewm_core.config.load_experiment``): the named fields are the knobs changed most often from
the launchpad; ``overrides`` takes any other dotted key (``model.hidden_dim: "1024"``, values read
as YAML), so the YAML stays the single description of an experiment.
"""

from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from pydantic import Field

DEFAULT_EXPERIMENT = "baseline-v22"


class ExperimentRunConfig(dg.Config):
    experiment: str = Field(DEFAULT_EXPERIMENT, description="experiment name: experiments/<name>.yaml")
    epochs: int | None = Field(None, description="train.epochs")
    batch_size: int | None = Field(None, description="train.batch_size")
    lr: float | None = Field(None, description="train.lr")
    max_games: int | None = Field(None, description="train.max_games: cap on games (by MD5 order)")
    max_train_batches: int | None = Field(None, description="train.max_train_batches per epoch")
    max_val_batches: int | None = Field(None, description="train.max_val_batches per epoch")
    device: str | None = Field(None, description="train.device: auto, cpu, cuda, cuda:1")
    wandb: bool | None = Field(None, description="train.wandb: log to Weights & Biases")
    overrides: dict[str, str] = Field(
        default_factory=dict, description="any other dotted key of the experiment, value as YAML"
    )

    def dotted_overrides(self) -> dict[str, Any]:
        named = {
            "train.epochs": self.epochs,
            "train.batch_size": self.batch_size,
            "train.lr": self.lr,
            "train.max_games": self.max_games,
            "train.max_train_batches": self.max_train_batches,
            "train.max_val_batches": self.max_val_batches,
            "train.device": self.device,
            "train.wandb": self.wandb,
        }
        extra = {key: yaml.safe_load(value) for key, value in self.overrides.items()}
        return {key: value for key, value in {**named, **extra}.items() if value is not None}

    def load(self, experiment_path: Path):
        from meleewm_core.config import load_experiment

        return load_experiment(experiment_path, self.dotted_overrides())
