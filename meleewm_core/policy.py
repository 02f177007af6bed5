"""Imitation policy: from the K context frames, predict the next frame's controllers of both players.

The policy sees exactly what the world model sees *except* the next frame's controllers (that is
its target), on the same shards, windows (``data.Batch``) and train/validation split, and trains
with ``train.train_run`` itself (its loss and metrics passed in): the run folder and manifest are
a world model's, so ``meleewm eval`` and lineage treat it alike.

Model (``ImitationPolicyMLP``, registered in ``models.MODELS`` as ``POLICY_MODEL_NAME``): the
FrameStackMLP's frame embedding and trunk without the conditioning, and two heads per player:

* analog (main x/y, c x/y, shoulder; encoded 0..1): the *change* from the last frame, trained with
  an L1 loss. L1 is minimised by the median, and the median change of a stick from one frame to
  the next is zero, so the policy keeps the stick where it is unless it is confident it moves;
  an MSE-trained mean would smear every held stick and lose to copying.
* buttons (A B X Y Z L R D-up): logits of being held next frame (BCE), added to a learned
  "keep the last state" prior, so the heads learn only when a button changes.

The baseline everything is compared with is "copy the previous controller" (the reference
policy lost to it on stick error, 0.043 against 0.012).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from meleewm_core.config import EncodingConfig, ExperimentConfig, ModelConfig
from meleewm_core.encoding import BUTTON_FIELDS, CONTROLLER_FIELDS, NUM_PLAYERS, STICK_FIELDS, EncodingSpec
from meleewm_core.models import MODELS
from meleewm_core.models.mlp import FrameStackMLP

POLICY_MODEL_NAME = "imitation_policy_mlp"
ANALOG_FIELDS = (*STICK_FIELDS, "shoulder")
# Melee reads a stick as one of 161 positions over -1..1 (steps of 1/80), i.e. 1/160 once encoded to 0..1.
ANALOG_STEP = 1 / 160


class ImitationPolicyMLP(nn.Module):
    """K encoded frames -> next frame's sticks, shoulder (as changes) and button logits, both players."""

    # The frame embedding is the world model's, so both read a frame identically.
    embed_frames = FrameStackMLP.embed_frames

    def __init__(self, encoding: EncodingConfig, model: ModelConfig):
        super().__init__()
        self.spec = spec = EncodingSpec(encoding)
        self.context_len = model.context_len
        self.embeddings = nn.ModuleDict(
            {name: nn.Embedding(spec.vocab(name), spec.embed_dim(name)) for name in (*spec.categorical_fields, "stage")}
        )
        for name in spec.categorical_fields:
            cols = [spec.int_col(p, name) for p in range(NUM_PLAYERS)]
            self.register_buffer(f"cols_{name}", torch.tensor(cols), persistent=False)
        self.trunk = nn.Sequential(
            nn.Linear(spec.frame_embed_dim * model.context_len, model.hidden_dim),
            nn.ReLU(),
            nn.Dropout(model.dropout),
            nn.Linear(model.hidden_dim, model.trunk_dim),
            nn.ReLU(),
            nn.Dropout(model.dropout),
        )
        self.analog_dim = len(ANALOG_FIELDS) * NUM_PLAYERS
        self.heads = nn.Linear(model.trunk_dim, self.analog_dim + len(BUTTON_FIELDS) * NUM_PLAYERS)
        self.register_buffer("button_cols", torch.tensor(spec.button_cols), persistent=False)
        # Buttons start from "keep the last state" (logit +-3, i.e. 95%) and the heads learn the
        # corrections, as the analog heads predict a change: the untrained policy is copy-previous.
        self.button_prior = nn.Parameter(torch.tensor(3.0))

    def forward(self, float_ctx: torch.Tensor, int_ctx: torch.Tensor, next_ctrl: torch.Tensor | None = None):
        """``next_ctrl`` is accepted for the world models' call signature and ignored: it is the target."""
        out = self.heads(self.trunk(self.embed_frames(float_ctx, int_ctx).flatten(1)))
        last_buttons = float_ctx[:, -1].index_select(1, self.button_cols)
        buttons = out[:, self.analog_dim :] + self.button_prior * (2 * last_buttons - 1)
        return {"analog_delta": out[:, : self.analog_dim], "button_logits": buttons}


MODELS[POLICY_MODEL_NAME] = ImitationPolicyMLP


def analog_cols(spec: EncodingSpec) -> list[int]:
    return spec.float_cols(ANALOG_FIELDS)


def predicted_controllers(outputs: dict[str, torch.Tensor], last_floats: torch.Tensor, spec: EncodingSpec):
    """(analog (B, 10) in 0..1, button probabilities (B, 16)) from the policy's outputs.

    A predicted change smaller than half a stick step is no change: the controller cannot move by
    less than one step, and a regression output is never exactly zero.
    """
    last_analog = last_floats.index_select(1, torch.tensor(analog_cols(spec), device=last_floats.device))
    change = outputs["analog_delta"].float()
    change = torch.where(change.abs() < ANALOG_STEP / 2, torch.zeros_like(change), change)
    analog = (last_analog + change).clamp(0, 1)
    return analog, torch.sigmoid(outputs["button_logits"].float())


def controller_row(analog: torch.Tensor, buttons: torch.Tensor, spec: EncodingSpec) -> torch.Tensor:
    """Assemble both players' controller fields in ``spec.controller_cols`` order (B, 26)."""
    per_field = {}
    for i, (p, name) in enumerate((p, n) for p in range(NUM_PLAYERS) for n in ANALOG_FIELDS):
        per_field[(p, name)] = analog[:, i]
    for i, (p, name) in enumerate((p, n) for p in range(NUM_PLAYERS) for n in BUTTON_FIELDS):
        per_field[(p, name)] = buttons[:, i]
    return torch.stack([per_field[(p, name)] for p in range(NUM_PLAYERS) for name in CONTROLLER_FIELDS], 1)


def policy_loss(outputs: dict[str, torch.Tensor], batch, spec: EncodingSpec, weights) -> tuple[torch.Tensor, dict]:
    """L1 on the analog changes (x ``loss_weights.continuous``) + BCE on the buttons (x ``.binary``)."""
    cols = torch.tensor(analog_cols(spec), device=batch.float_tgt.device)
    change = batch.float_tgt.index_select(1, cols) - batch.float_ctx[:, -1].index_select(1, cols)
    analog = F.l1_loss(outputs["analog_delta"].float(), change)
    buttons_target = batch.float_tgt.index_select(1, torch.tensor(spec.button_cols, device=cols.device))
    buttons = F.binary_cross_entropy_with_logits(outputs["button_logits"].float(), buttons_target)
    total = weights.continuous * analog + weights.binary * buttons
    return total, {"analog": analog.detach(), "buttons": buttons.detach()}


class PolicyMetrics:
    """Sums over an epoch of the policy's errors next to copy-previous, on the same windows.

    ``stick_mae``: mean absolute error of the 4 stick axes of both players in encoded units (0..1,
    i.e. half the game's -1..1 range); ``shoulder_mae`` likewise; ``button_acc``: fraction of the
    16 button states right; ``button_f1``: F1 of "held" over all buttons; ``button_press_recall``:
    fraction of presses (released -> held) predicted (copy-previous never predicts one);
    ``loss/buttons``: the mean button BCE, beside that of copy-previous calibrated to the real
    keep rate.
    """

    def __init__(self, spec: EncodingSpec):
        self.spec = spec
        self.sums: dict[str, float] = {}

    def _add(self, key: str, value) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    @torch.no_grad()
    def update(self, outputs, batch, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        spec = self.spec
        size = batch.float_tgt.shape[0]
        self._add("count", size)
        self._add("loss", loss.float() * size)
        for name, part in parts.items():
            self._add(f"loss/{name}", part.float() * size)
        last = batch.float_ctx[:, -1]
        analog, probs = predicted_controllers(outputs, last, spec)
        cols = torch.tensor(analog_cols(spec), device=last.device)
        true_analog, prev_analog = batch.float_tgt.index_select(1, cols), last.index_select(1, cols)
        is_stick = torch.tensor([n in STICK_FIELDS for _ in range(NUM_PLAYERS) for n in ANALOG_FIELDS], device=last.device)
        for who, guess in (("", analog), ("baseline/", prev_analog)):
            error = (guess - true_analog).abs()
            self._add(f"{who}stick_abs", error[:, is_stick].sum())
            self._add(f"{who}stick_sq", (error[:, is_stick] ** 2).sum())
            self._add(f"{who}shoulder_abs", error[:, ~is_stick].sum())
        buttons = torch.tensor(spec.button_cols, device=last.device)
        held, was_held = batch.float_tgt.index_select(1, buttons) > 0.5, last.index_select(1, buttons) > 0.5
        pressed = held & ~was_held
        self._add("presses", pressed.sum())
        self._add("button_keeps", (held == was_held).sum())
        for who, guess in (("", probs > 0.5), ("baseline/", was_held)):
            self._add(f"{who}button_hits", (guess == held).sum())
            self._add(f"{who}button_tp", (guess & held).sum())
            self._add(f"{who}button_fp", (guess & ~held).sum())
            self._add(f"{who}button_fn", (~guess & held).sum())
            self._add(f"{who}press_hits", (guess & pressed).sum())

    def result(self) -> dict[str, float]:
        s = self.sums
        count = max(s.get("count", 0.0), 1.0)
        sticks, shoulders, buttons = count * len(STICK_FIELDS) * NUM_PLAYERS, count * NUM_PLAYERS, count * len(BUTTON_FIELDS) * NUM_PLAYERS
        out = {key: value / count for key, value in s.items() if key.startswith("loss")}
        for who in ("", "baseline/"):
            tp, fp, fn = s.get(f"{who}button_tp", 0.0), s.get(f"{who}button_fp", 0.0), s.get(f"{who}button_fn", 0.0)
            out[f"{who}stick_mae"] = s.get(f"{who}stick_abs", 0.0) / sticks
            out[f"{who}stick_mse"] = s.get(f"{who}stick_sq", 0.0) / sticks
            out[f"{who}shoulder_mae"] = s.get(f"{who}shoulder_abs", 0.0) / shoulders
            out[f"{who}button_acc"] = s.get(f"{who}button_hits", 0.0) / buttons
            out[f"{who}button_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
            presses = s.get("presses", 0.0)
            out[f"{who}button_press_recall"] = s.get(f"{who}press_hits", 0.0) / presses if presses else float("nan")
        # The button BCE of a calibrated copy-previous: "same as last frame" with probability q, the
        # rate at which buttons really keep their state on these very frames (a baseline that knows
        # the answer's base rate, so beating it means knowing *when* buttons change).
        keep = min(max(s.get("button_keeps", 0.0) / buttons, 1e-12), 1 - 1e-12)
        out["baseline/loss/buttons"] = -(keep * math.log(keep) + (1 - keep) * math.log(1 - keep))
        return out


@torch.no_grad()
def evaluate_policy(model: nn.Module, batches, experiment: ExperimentConfig) -> dict[str, float]:
    spec = EncodingSpec(experiment.encoding)
    model.eval()
    metrics = PolicyMetrics(spec)
    for batch in batches:
        outputs = model(batch.float_ctx, batch.int_ctx)
        loss, parts = policy_loss(outputs, batch, spec, experiment.train.loss_weights)
        metrics.update(outputs, batch, loss, parts)
    return metrics.result()


def train_policy_run(
    experiment: ExperimentConfig,
    root,
    *,
    dagster_run_id: str | None = None,
    progress: bool = True,
    **overrides: Any,
):
    """Train the imitation policy of ``experiment`` (its model.name must be ``POLICY_MODEL_NAME``).

    ``train.train_run`` with the policy's loss and metrics: the same shards, split, batches,
    schedule, checkpoints, wandb logging and run manifest as a world model. Returns its ``RunResult``
    (``metrics["beats_persistence"]`` there compares with copy-previous).
    """
    from meleewm_core.train import apply_overrides, train_run

    experiment = apply_overrides(experiment, overrides)
    if experiment.model.name != POLICY_MODEL_NAME:
        raise ValueError(f"experiment {experiment.name!r}: model.name is {experiment.model.name!r}, "
                         f"a policy run needs {POLICY_MODEL_NAME!r} (see experiments/policy-v22.yaml)")
    spec = EncodingSpec(experiment.encoding)
    weights = experiment.train.loss_weights
    return train_run(
        experiment,
        root,
        dagster_run_id=dagster_run_id,
        progress=progress,
        loss_fn=lambda outputs, batch: policy_loss(outputs, batch, spec, weights),
        make_metrics=lambda: PolicyMetrics(spec),
    )
