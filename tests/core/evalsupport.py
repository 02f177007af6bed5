"""Shared pieces of the evaluation, policy and simulate tests: a writable data root and short runs.

Runs are deliberately tiny (a few batches, narrow layers): the tests check what evaluation
computes and writes, not how good a model gets.
"""

from __future__ import annotations

import shutil

import torch
import torch.nn.functional as F

from meleewm_core.config import ExperimentConfig
from meleewm_core.data import Batch
from meleewm_core.encoding import HeadLayout
from meleewm_core.metrics import true_delta
from meleewm_core.store import DataRoot

# 70% keeps 5 of the 6 fixture games for training and 1 (b2620067..., 12k frames) for validation.
QUICK_TRAIN = {"epochs": 1, "max_train_batches": 4, "max_val_batches": 2, "wandb": False, "train_percent": 70}
SMALL_MODEL = {"hidden_dim": 64, "trunk_dim": 32}


def writable_root(tmp_path_factory, parsed_root: DataRoot, name: str) -> DataRoot:
    root = DataRoot(tmp_path_factory.mktemp(name))
    shutil.copytree(parsed_root.root, root.root, dirs_exist_ok=True)
    return root


def quick_experiment(
    name: str, *, model: dict | None = None, encoding: dict | None = None, **train
) -> ExperimentConfig:
    return ExperimentConfig(
        name=name,
        model={**SMALL_MODEL, **(model or {})},
        encoding=encoding or {},
        train={**QUICK_TRAIN, **train},
    )


def oracle(layout: HeadLayout):
    """Predicts the real next frame (read from the batch's target): every error must be zero."""

    def predict(batch: Batch) -> dict[str, torch.Tensor]:
        binary = batch.float_tgt[:, layout.binary_cols]
        outputs = {"continuous_delta": true_delta(batch, layout), "binary_logits": (binary * 2 - 1) * 30}
        for key, player, name, vocab in layout.logit_heads:
            outputs[key] = (
                F.one_hot(batch.int_tgt[:, layout.categorical_col(player, name)], vocab).float() * 30
            )
        return outputs

    return predict


def persistence(layout: HeadLayout):
    """Repeats the last context frame: must score exactly the persistence baseline."""

    def predict(batch: Batch) -> dict[str, torch.Tensor]:
        last_f, last_i = batch.float_ctx[:, -1], batch.int_ctx[:, -1]
        outputs = {
            "continuous_delta": torch.zeros(len(last_f), len(layout.continuous_cols)),
            "binary_logits": (last_f[:, layout.binary_cols] * 2 - 1) * 30,
        }
        for key, player, name, vocab in layout.logit_heads:
            outputs[key] = F.one_hot(last_i[:, layout.categorical_col(player, name)], vocab).float() * 30
        return outputs

    return predict
