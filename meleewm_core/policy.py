"""Imitation policy: from the K context frames, predict the next frame's controllers of both players.

The policy sees exactly what the world model sees *except* the next frame's controllers (that is
its target), on the same shards, windows (``data.Batch``) and train/validation split, and trains
with ``train.train_run`` itself (its loss and metrics passed in): the run folder and manifest are
a world model's, so ``meleewm eval`` and lineage treat it alike.

Model (``ImitationPolicyMLP``, registered in ``models.MODELS`` as ``POLICY_MODEL_NAME``): the
FrameStackMLP's frame embedding and trunk without the conditioning, and two heads per player:

* analog (main x/y, c x/y, shoulder; encoded 0..1): per field a distribution over the size of
  the *change* from the last frame, in bins (one per stick step up to 6 steps, then ~20% wider;
  cross-entropy), and the prediction is its median: the least expected absolute error, "no
  change" unless more than half the probability says the stick moves (mid-flick, a pressed
  shoulder). An L1-trained regression of the change has the same optimum but, with 90% of
  changes exactly zero, never learned to leave it (a tie with copy-previous on every frame).
  The trunk also gets the last analog changes and each button's frames in its state explicitly.
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
from meleewm_core.models import MODELS, layers
from meleewm_core.models.mlp import FrameStackMLP

POLICY_MODEL_NAME = "imitation_policy_mlp"
ANALOG_FIELDS = (*STICK_FIELDS, "shoulder")
# Melee reads a stick as one of 161 positions over -1..1 (steps of 1/80), i.e. 1/160 once encoded to 0..1.
ANALOG_STEP = 1 / 160
# Frame-to-frame analog changes the policy is shown explicitly (a flick passes through 1-3
# intermediate values, so the last few changes say where a stick is heading).
HISTORY_CHANGES = 3
# ``analog_history_head``: the other axis of each stick, and the width of the shared MLP.
PARTNER_AXIS = {"main_x": "main_y", "main_y": "main_x", "c_x": "c_y", "c_y": "c_x"}
ANALOG_HISTORY_HIDDEN = 64


def _change_edges_steps() -> list[float]:
    """Upper edges (in stick steps, half-integers) of the change-size bins: one bin per step up
    to 6 steps, then ~20% wider each, up to the full range (160 steps)."""
    edges = [0.5]
    while edges[-1] < 160:
        edges.append(max(edges[-1] + 1, round(edges[-1] * 1.2) + 0.5))
    return edges


# Bins of the size of an analog change; the head predicts, per field, a distribution over
# -size .. 0 .. +size. Bin 0 is "no change" (under half a step).
CHANGE_EDGES_STEPS = _change_edges_steps()


class ImitationPolicyMLP(nn.Module):
    """K encoded frames -> next frame's sticks, shoulder (as changes) and button logits, both players."""

    # The frame embedding is the world model's, so both read a frame identically.
    embed_frames = FrameStackMLP.embed_frames

    def __init__(self, encoding: EncodingConfig, model: ModelConfig):
        super().__init__()
        if model.context_len < 2:
            raise ValueError(
                f"{POLICY_MODEL_NAME} needs model.context_len >= 2 (a change needs two frames), "
                f"got {model.context_len}"
            )
        self.spec = spec = EncodingSpec(encoding)
        self.context_len = model.context_len
        self.embeddings = nn.ModuleDict(
            {
                name: layers.Embedding(spec.vocab(name), spec.embed_dim(name))
                for name in (*spec.categorical_fields, "stage")
            }
        )
        for name in spec.categorical_fields:
            cols = [spec.int_col(p, name) for p in range(NUM_PLAYERS)]
            self.register_buffer(f"cols_{name}", torch.tensor(cols), persistent=False)
        self.register_buffer("analog_cols", torch.tensor(analog_cols(spec)), persistent=False)
        self.register_buffer("button_cols", torch.tensor(spec.button_cols), persistent=False)
        self.analog_dim = len(ANALOG_FIELDS) * NUM_PLAYERS
        self.history_changes = min(HISTORY_CHANGES, model.context_len - 1)
        history_dim = self.analog_dim * self.history_changes + len(spec.button_cols)
        self.trunk = nn.Sequential(
            nn.Linear(spec.frame_embed_dim * model.context_len + history_dim, model.hidden_dim),
            nn.ReLU(),
            layers.Dropout(model.dropout),
            nn.Linear(model.hidden_dim, model.trunk_dim),
            nn.ReLU(),
            layers.Dropout(model.dropout),
        )
        edges = torch.tensor(CHANGE_EDGES_STEPS) * ANALOG_STEP
        self.register_buffer("change_edges", edges, persistent=False)
        self.num_bins = 2 * len(edges) - 1
        self.heads = nn.Linear(
            model.trunk_dim, self.analog_dim * self.num_bins + len(BUTTON_FIELDS) * NUM_PLAYERS
        )
        # The change each bin stands for, per field: starts at the bin's middle and is fitted (by
        # ``policy_loss``) to the median change of the training frames in the bin.
        middles = torch.cat([torch.zeros(1), (edges[:-1] + edges[1:]) / 2])
        self.bin_values = nn.Parameter(torch.cat([-middles[1:].flip(0), middles]).repeat(self.analog_dim, 1))
        self.analog_history_head = model.analog_history_head
        if model.analog_history_head:
            fields = len(ANALOG_FIELDS)
            # Per analog column: the column of the stick's other axis (the shoulder has none: itself,
            # masked), and which of the five fields it is.
            partner = [ANALOG_FIELDS.index(PARTNER_AXIS.get(name, name)) for name in ANALOG_FIELDS]
            self.register_buffer(
                "partner_fields",
                torch.tensor([p * fields + i for p in range(NUM_PLAYERS) for i in partner]),
                persistent=False,
            )
            self.register_buffer(
                "has_partner",
                torch.tensor(
                    [name in PARTNER_AXIS for name in ANALOG_FIELDS] * NUM_PLAYERS, dtype=torch.float32
                ),
                persistent=False,
            )
            self.register_buffer("field_kinds", torch.eye(fields).repeat(NUM_PLAYERS, 1), persistent=False)
            features = 1 + self.history_changes + 1 + fields
            self.history_head = nn.Sequential(
                nn.Linear(features, ANALOG_HISTORY_HIDDEN),
                nn.ReLU(),
                nn.Linear(ANALOG_HISTORY_HIDDEN, self.num_bins),
            )
            with torch.no_grad():  # starts adding nothing: the untrained policy is still copy-previous
                self.history_head[-1].weight.zero_()
                self.history_head[-1].bias.zero_()
        # Buttons start from "keep the last state" (logit +-3, i.e. 95%) and the heads learn the
        # corrections, as the analog heads predict a change: the untrained policy is copy-previous.
        self.button_prior = nn.Parameter(torch.tensor(3.0))

    def forward(self, float_ctx: torch.Tensor, int_ctx: torch.Tensor, next_ctrl: torch.Tensor | None = None):
        """``next_ctrl`` is accepted for the world models' call signature and ignored: it is the target."""
        frames = self.embed_frames(float_ctx, int_ctx).flatten(1)
        out = self.heads(
            self.trunk(torch.cat([frames, self.controller_history(float_ctx).to(frames.dtype)], 1))
        ).float()
        split = self.analog_dim * self.num_bins
        change_logits = out[:, :split].reshape(-1, self.analog_dim, self.num_bins)
        if self.analog_history_head:
            change_logits = change_logits + self.history_head(self.analog_history(float_ctx))
        last_buttons = float_ctx[:, -1].index_select(1, self.button_cols).float()
        buttons = out[:, split:] + self.button_prior * (2 * last_buttons - 1)
        return {
            "analog_delta": self.median_change(change_logits),
            "change_logits": change_logits,
            "bin_values": self.bin_values,
            "button_logits": buttons,
        }

    def median_change(self, change_logits: torch.Tensor) -> torch.Tensor:
        """The median of each predicted change distribution (B, 10): the prediction with the least
        expected absolute error. It is "no change" unless more than half the probability lies on
        one side, as for a stick mid-flick."""
        below = (change_logits.detach().softmax(-1).cumsum(-1) < 0.5).sum(-1, keepdim=True)
        values = self.bin_values.detach().expand(len(change_logits), -1, -1)
        return values.gather(2, below.clamp(max=self.num_bins - 1)).squeeze(2)

    def analog_history(self, float_ctx: torch.Tensor) -> torch.Tensor:
        """(B, 10, features): per analog field its own recent past only: the last value (-1..1),
        the last changes as asinh(steps), the other stick axis' last change, and which field."""
        analog = float_ctx[:, -self.history_changes - 1 :].float().index_select(2, self.analog_cols)
        changes = torch.asinh((analog[:, 1:] - analog[:, :-1]) / ANALOG_STEP)  # (B, H, 10)
        partner = changes[:, -1].index_select(1, self.partner_fields) * self.has_partner
        kinds = self.field_kinds.expand(len(float_ctx), -1, -1)
        return torch.cat(
            [2 * analog[:, -1, :, None] - 1, changes.transpose(1, 2), partner[..., None], kinds], 2
        )

    def controller_history(self, float_ctx: torch.Tensor) -> torch.Tensor:
        """Features of the controllers' recent past, which the raw frames give the trunk only as
        small differences of large inputs (one stick step, 0.006, beside a value near 0.5 is below
        bf16's resolution; computed in float32): the last analog changes as asinh(steps) (one
        step ~0.9, a full flick ~5), and per button the frames it has kept its state (a short
        hop's jump is held 1-3 frames), over the context length.
        """
        frames = float_ctx.float()
        analog = frames[:, -self.history_changes - 1 :].index_select(2, self.analog_cols)
        changes = analog[:, 1:] - analog[:, :-1]
        buttons = frames.index_select(2, self.button_cols) > 0.5
        same = (buttons == buttons[:, -1:]).flip(1).float()
        kept = same.cumprod(1).sum(1) / buttons.shape[1]
        return torch.cat([torch.asinh(changes / ANALOG_STEP).flatten(1), kept], 1)


MODELS[POLICY_MODEL_NAME] = ImitationPolicyMLP


def analog_cols(spec: EncodingSpec) -> list[int]:
    return spec.float_cols(ANALOG_FIELDS)


def change_bins(change: torch.Tensor) -> torch.Tensor:
    """The bin of each analog change (B, 10), 0 .. 2 * len(CHANGE_EDGES_STEPS) - 2, "no change" in the middle."""
    edges = torch.tensor(CHANGE_EDGES_STEPS, device=change.device) * ANALOG_STEP
    size = torch.bucketize(change.abs(), edges).clamp(max=len(edges) - 1)
    return len(edges) - 1 + torch.sign(change).long() * size


def predicted_controllers(outputs: dict[str, torch.Tensor], last_floats: torch.Tensor, spec: EncodingSpec):
    """(analog (B, 10) in 0..1, button probabilities (B, 16)) from the policy's outputs.

    A predicted change smaller than half a stick step is no change: the controller cannot move by
    less than one step (a "no change" bin's fitted value may sit a hair off zero).
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


def policy_loss(
    outputs: dict[str, torch.Tensor], batch, spec: EncodingSpec, weights
) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of the analog changes' bins (x ``loss_weights.continuous``) + BCE on the
    buttons (x ``.binary``), + the L1 that fits each bin's value to its training changes (it
    reaches only ``bin_values``). Reported: ``analog``, the L1 of the predicted (median) change."""
    cols = torch.tensor(analog_cols(spec), device=batch.float_tgt.device)
    change = (batch.float_tgt.index_select(1, cols) - batch.float_ctx[:, -1].index_select(1, cols)).float()
    bins = change_bins(change)
    change_ce = F.cross_entropy(outputs["change_logits"].float().transpose(1, 2), bins)
    values = outputs["bin_values"].expand(len(bins), -1, -1).gather(2, bins[:, :, None]).squeeze(2)
    bin_fit = F.l1_loss(values, change)
    buttons_target = batch.float_tgt.index_select(1, torch.tensor(spec.button_cols, device=cols.device))
    buttons = F.binary_cross_entropy_with_logits(outputs["button_logits"].float(), buttons_target)
    total = weights.continuous * change_ce + bin_fit + weights.binary * buttons
    analog = F.l1_loss(outputs["analog_delta"].float(), change)
    return total, {"analog": analog.detach(), "analog_bins": change_ce.detach(), "buttons": buttons.detach()}


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
        is_stick = torch.tensor(
            [n in STICK_FIELDS for _ in range(NUM_PLAYERS) for n in ANALOG_FIELDS], device=last.device
        )
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
        sticks, shoulders, buttons = (
            count * len(STICK_FIELDS) * NUM_PLAYERS,
            count * NUM_PLAYERS,
            count * len(BUTTON_FIELDS) * NUM_PLAYERS,
        )
        out = {key: value / count for key, value in s.items() if key.startswith("loss")}
        for who in ("", "baseline/"):
            tp, fp, fn = (
                s.get(f"{who}button_tp", 0.0),
                s.get(f"{who}button_fp", 0.0),
                s.get(f"{who}button_fn", 0.0),
            )
            out[f"{who}stick_mae"] = s.get(f"{who}stick_abs", 0.0) / sticks
            out[f"{who}stick_mse"] = s.get(f"{who}stick_sq", 0.0) / sticks
            out[f"{who}shoulder_mae"] = s.get(f"{who}shoulder_abs", 0.0) / shoulders
            out[f"{who}button_acc"] = s.get(f"{who}button_hits", 0.0) / buttons
            out[f"{who}button_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
            presses = s.get("presses", 0.0)
            out[f"{who}button_press_recall"] = (
                s.get(f"{who}press_hits", 0.0) / presses if presses else float("nan")
            )
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
        raise ValueError(
            f"experiment {experiment.name!r}: model.name is {experiment.model.name!r}, "
            f"a policy run needs {POLICY_MODEL_NAME!r} (see experiments/policy-v22.yaml)"
        )
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
