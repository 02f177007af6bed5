"""Imitation policy on real replays: trains with the run layout, is scored against copy-previous."""

from __future__ import annotations

import json

import pytest
import torch
from evalsupport import quick_experiment, writable_root
from torch import nn

from meleewm_core.cli import main
from meleewm_core.config import load_experiment
from meleewm_core.data import FrameData, make_batches
from meleewm_core.encoding import EncodingSpec
from meleewm_core.eval import evaluate_run
from meleewm_core.policy import POLICY_MODEL_NAME, evaluate_policy, train_policy_run
from meleewm_core.train import ensure_shards, load_checkpoint

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory, parsed_root):
    return writable_root(tmp_path_factory, parsed_root, "policy_root")


@pytest.fixture(scope="module")
def policy_run(root):
    return train_policy_run(quick_experiment("policy-test", model={"name": POLICY_MODEL_NAME}), root, progress=False)


def test_policy_run_has_the_world_model_run_layout(policy_run):
    manifest = json.loads((policy_run.run_dir / "manifest.json").read_text())
    assert manifest["config"]["model"]["name"] == POLICY_MODEL_NAME
    assert manifest["game_md5s"]["val"] and manifest["game_md5s"]["train"]
    assert not set(manifest["game_md5s"]["val"]) & set(manifest["game_md5s"]["train"])
    loaded = load_checkpoint(policy_run.best_checkpoint)
    assert loaded.experiment.model.name == POLICY_MODEL_NAME
    assert {"stick_mae", "baseline/stick_mae", "button_acc", "baseline/button_acc"} <= set(policy_run.metrics)


def test_eval_scores_a_policy_against_copy_previous(policy_run, root):
    report = evaluate_run(policy_run.run_dir, root, progress=False)
    assert report.kind == "policy" and report.rollout is None
    for key in ("stick_mae", "shoulder_mae", "button_acc", "button_f1"):
        assert set(report.teacher_forced[key]) == {"model", "copy_previous"}, key
    # Copying the previous controller is a strong baseline: the sticks barely move between frames.
    assert 0 < report.stick_mae_copy_previous < 0.1
    assert 0.9 < report.button_acc_copy_previous < 1
    png = report.plots["policy"].read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 10_000


class CopyPrevious(nn.Module):
    """A policy that repeats the last controller: must score exactly the copy-previous baseline."""

    def __init__(self, spec: EncodingSpec):
        super().__init__()
        self.spec = spec

    def forward(self, float_ctx, int_ctx, next_ctrl=None):
        last = float_ctx[:, -1]
        buttons = last[:, self.spec.button_cols]
        return {"analog_delta": torch.zeros(len(last), 10), "button_logits": (buttons * 2 - 1) * 30}


def test_copy_previous_policy_equals_the_baseline(root):
    experiment = quick_experiment("policy-copy", model={"name": POLICY_MODEL_NAME})
    spec = EncodingSpec(experiment.encoding)
    data = FrameData.from_shards(ensure_shards(experiment, root, progress=False), spec, train_percent=70)
    batches = make_batches(data, "val", mode="memory", batch_size=2048, context_len=10, device="cpu", shuffle=False)
    metrics = evaluate_policy(CopyPrevious(spec), batches, experiment)
    for key in ("stick_mae", "stick_mse", "shoulder_mae", "button_acc", "button_f1", "button_press_recall"):
        assert metrics[key] == pytest.approx(metrics[f"baseline/{key}"], abs=1e-7), key


def test_policy_experiment_file_validates():
    experiment = load_experiment("experiments/policy-v22.yaml")
    assert experiment.model.name == POLICY_MODEL_NAME


def test_train_policy_rejects_a_world_model_config(root, capsys):
    code = main(["train-policy", "--config", "experiments/baseline-v22.yaml", "--data", str(root.root), "--quiet"])
    assert code == 1
    assert "imitation_policy_mlp" in capsys.readouterr().err
