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
from meleewm_core.policy import (
    ANALOG_STEP,
    CHANGE_EDGES_STEPS,
    POLICY_MODEL_NAME,
    ImitationPolicyMLP,
    PolicyMetrics,
    analog_cols,
    change_bins,
    evaluate_policy,
    policy_loss,
    train_policy_run,
)
from meleewm_core.train import ensure_shards, load_checkpoint

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory, parsed_root):
    return writable_root(tmp_path_factory, parsed_root, "policy_root")


@pytest.fixture(scope="module")
def policy_run(root):
    return train_policy_run(
        quick_experiment("policy-test", model={"name": POLICY_MODEL_NAME}), root, progress=False
    )


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


NO_CHANGE = len(CHANGE_EDGES_STEPS) - 1
NUM_BINS = 2 * len(CHANGE_EDGES_STEPS) - 1


class CopyPrevious(nn.Module):
    """A policy that repeats the last controller: must score exactly the copy-previous baseline."""

    def __init__(self, spec: EncodingSpec):
        super().__init__()
        self.spec = spec

    def forward(self, float_ctx, int_ctx, next_ctrl=None):
        last = float_ctx[:, -1]
        buttons = last[:, self.spec.button_cols]
        change_logits = (
            torch.nn.functional.one_hot(torch.full((len(last), 10), NO_CHANGE), NUM_BINS).float() * 30
        )
        return {
            "analog_delta": torch.zeros(len(last), 10),
            "change_logits": change_logits,
            "bin_values": torch.zeros(10, NUM_BINS),
            "button_logits": (buttons * 2 - 1) * 30,
        }


@pytest.fixture(scope="module")
def val_batches(root):
    experiment = quick_experiment("policy-copy", model={"name": POLICY_MODEL_NAME})
    spec = EncodingSpec(experiment.encoding)
    data = FrameData.from_shards(ensure_shards(experiment, root, progress=False), spec, train_percent=70)
    return experiment, list(
        make_batches(data, "val", mode="memory", batch_size=2048, context_len=10, device="cpu", shuffle=False)
    )


def test_copy_previous_policy_equals_the_baseline(val_batches):
    experiment, batches = val_batches
    metrics = evaluate_policy(CopyPrevious(EncodingSpec(experiment.encoding)), batches, experiment)
    for key in ("stick_mae", "stick_mse", "shoulder_mae", "button_acc", "button_f1", "button_press_recall"):
        assert metrics[key] == pytest.approx(metrics[f"baseline/{key}"], abs=1e-7), key


def test_every_stick_change_has_a_bin_that_stands_for_it():
    experiment = quick_experiment("policy-bins", model={"name": POLICY_MODEL_NAME})
    values = ImitationPolicyMLP(experiment.encoding, experiment.model).bin_values.detach()[0]
    steps = torch.arange(-160, 161, dtype=torch.float32)
    bins = change_bins(steps[:, None] * ANALOG_STEP)[:, 0]
    assert bins[steps == 0].item() == NO_CHANGE
    # The untrained bin values are within 10% of any change in their bin (training refines them).
    assert torch.all((values[bins] - steps * ANALOG_STEP).abs() <= 0.1 * steps.abs() * ANALOG_STEP + 1e-7)


def oracle_share_scores(batches, experiment, share: float) -> dict[str, float]:
    """Scores of a policy that gives ``share`` of each analog field's probability to the bin of the
    real change (read from the target) and the rest to "no change", decided by the policy's own
    median rule; buttons copy the last frame."""
    spec = EncodingSpec(experiment.encoding)
    model = ImitationPolicyMLP(experiment.encoding, experiment.model)
    metrics = PolicyMetrics(spec)
    for batch in batches:
        cols = analog_cols(spec)
        bins = change_bins(batch.float_tgt[:, cols] - batch.float_ctx[:, -1, cols])
        probs = torch.zeros(len(bins), 10, NUM_BINS)
        probs[..., NO_CHANGE] = 1 - share
        probs.scatter_add_(2, bins[..., None], torch.full((len(bins), 10, 1), share))
        logits = probs.clamp(min=1e-9).log()
        buttons = batch.float_ctx[:, -1, spec.button_cols]
        outputs = {
            "analog_delta": model.median_change(logits),
            "change_logits": logits,
            "bin_values": model.bin_values,
            "button_logits": (buttons * 2 - 1) * 30,
        }
        loss, parts = policy_loss(outputs, batch, spec, experiment.train.loss_weights)
        metrics.update(outputs, batch, loss, parts)
    return metrics.result()


def test_the_policy_moves_a_stick_only_when_most_of_its_probability_says_so(val_batches):
    experiment, batches = val_batches
    unsure = oracle_share_scores(batches, experiment, 0.4)
    assert unsure["stick_mae"] == pytest.approx(unsure["baseline/stick_mae"], abs=1e-7)
    assert unsure["shoulder_mae"] == pytest.approx(unsure["baseline/shoulder_mae"], abs=1e-7)
    # Mid-flick, the stick moves on: a policy that is right more often than not about where
    # (within its bin) beats copying the previous stick by far.
    sure = oracle_share_scores(batches, experiment, 0.6)
    assert sure["stick_mae"] < 0.2 * sure["baseline/stick_mae"]
    assert sure["shoulder_mae"] < 0.2 * sure["baseline/shoulder_mae"]


def test_policy_experiment_file_validates():
    experiment = load_experiment("experiments/policy-v22.yaml")
    assert experiment.model.name == POLICY_MODEL_NAME


def test_train_policy_rejects_a_world_model_config(root, capsys):
    code = main(
        ["train-policy", "--config", "experiments/baseline-v22.yaml", "--data", str(root.root), "--quiet"]
    )
    assert code == 1
    assert "imitation_policy_mlp" in capsys.readouterr().err


def test_analog_history_head_reads_each_fields_own_past_and_starts_as_the_plain_policy():
    experiment = quick_experiment("policy-history", model={"name": POLICY_MODEL_NAME})
    spec = EncodingSpec(experiment.encoding)
    plain = ImitationPolicyMLP(experiment.encoding, experiment.model).eval()
    model = ImitationPolicyMLP(
        experiment.encoding, experiment.model.model_copy(update={"analog_history_head": True})
    ).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    float_ctx = torch.full((2, experiment.model.context_len, spec.float_per_frame), 0.5)
    main_x, main_y, shoulder = (spec.float_col(1, name) for name in ("main_x", "main_y", "shoulder"))
    # Player 1 flicks the main stick right by 8 then 40 steps while the y axis rises 4 steps.
    float_ctx[:, -2, main_x], float_ctx[:, -1, main_x] = 0.5 + 8 * ANALOG_STEP, 0.5 + 48 * ANALOG_STEP
    float_ctx[:, -1, main_y] = 0.5 + 4 * ANALOG_STEP
    float_ctx[:, -1, shoulder] = 1.0
    ints = torch.zeros(2, experiment.model.context_len, spec.int_per_frame, dtype=torch.long)

    features = model.analog_history(float_ctx)  # (B, 10 fields, value + 3 changes + partner + 5 kinds)
    assert features.shape == (2, 10, 10)
    p1_x, p1_y, p1_shoulder = 5, 6, 9  # player 1's fields follow player 0's five
    expected_x = torch.tensor([96 / 160, 0.0, 8.0, 40.0, 4.0, 1, 0, 0, 0, 0])
    torch.testing.assert_close(
        features[0, p1_x, :5], torch.cat([expected_x[:1], torch.asinh(expected_x[1:5])])
    )
    torch.testing.assert_close(features[0, p1_y, 4], torch.asinh(torch.tensor(40.0)))  # its partner's change
    assert features[0, p1_shoulder, 0] == 1.0 and features[0, p1_shoulder, 4] == 0.0  # no partner
    assert torch.equal(features[0, p1_shoulder, 5:], torch.tensor([0.0, 0, 0, 0, 1]))

    torch.testing.assert_close(
        model(float_ctx, ints)["change_logits"], plain(float_ctx, ints)["change_logits"]
    )
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 10 * 64 + 64 + 64 * model.num_bins + model.num_bins
