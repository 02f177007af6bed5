"""Losses and teacher-forced metrics, each beside the persistence baseline on the same frames.

Persistence ("repeat the last frame") predicts a zero delta, the last frame's binaries and the
last frame's categoricals; it can never predict an action change, so its action-change accuracy is
0 by construction. Continuous errors are reported in game units (the encoded delta divided by the
field's scale): ``position_mae`` averages x and y of both players, ``damage_mae`` the percent of
both players (the reference's definitions; its action-change accuracy counted player 0 only, here
both players count). Accumulation stays on the device and syncs once per epoch.

Imports only torch (the evaluation helper reuses this module on a GPU box).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from meleewm_core.config import LossWeights
from meleewm_core.encoding import (
    BINARY_FIELDS,
    CORE_CONTINUOUS_FIELDS,
    NUM_PLAYERS,
    VELOCITY_FIELDS,
    HeadLayout,
)

# A delta smaller than this (in encoded units) counts as "unchanged" for the change gate.
CHANGE_EPSILON = 1e-6


@lru_cache(maxsize=256)
def cached_tensor(values: tuple, device: torch.device) -> torch.Tensor:
    """A small constant tensor made once per device: building it each step would copy (and, on
    CUDA, synchronise) the host every step."""
    return torch.tensor(values, device=device)


def true_delta(batch, layout: HeadLayout) -> torch.Tensor:
    cols = cached_tensor(tuple(layout.continuous_cols), batch.float_tgt.device)
    return batch.float_tgt.index_select(1, cols) - batch.float_ctx[:, -1].index_select(1, cols)


def _continuous_weights(layout: HeadLayout, weights: LossWeights) -> list[float]:
    def weight(name: str) -> float:
        if name in CORE_CONTINUOUS_FIELDS:
            return weights.continuous
        return weights.velocity if name in VELOCITY_FIELDS else weights.dynamics

    return [weight(name) for _ in range(NUM_PLAYERS) for name in layout.continuous]


def _delta_error(
    pred: torch.Tensor, target: torch.Tensor, delta_scale: torch.Tensor | None, robust: bool
) -> torch.Tensor:
    if delta_scale is None:
        return (pred - target) ** 2
    if robust:
        return F.smooth_l1_loss(pred / delta_scale, target / delta_scale, reduction="none")
    return ((pred - target) / delta_scale) ** 2


def position_loss(
    outputs: dict[str, torch.Tensor],
    batch,
    layout: HeadLayout,
    delta_scale: torch.Tensor | None = None,
    robust: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The x/y error alone: the applied position deltas (after any change gate) against the
    real ones, measured like ``compute_loss`` measures every delta."""
    slots = cached_tensor(tuple(layout.position_slots), batch.float_tgt.device)
    pred = outputs["continuous_delta"].float().index_select(1, slots)
    target = true_delta(batch, layout).index_select(1, slots)
    scale = delta_scale.index_select(0, slots) if delta_scale is not None else None
    loss = _delta_error(pred, target, scale, robust).mean()
    return loss, {"position": loss.detach()}


def compute_loss(
    outputs: dict[str, torch.Tensor],
    batch,
    layout: HeadLayout,
    weights: LossWeights,
    delta_scale: torch.Tensor | None = None,
    robust: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the head losses, and each head's loss (detached).

    With ``v22`` heads this is the reference's loss: MSE on the 8 deltas x1.0, BCE on the 6
    binaries x0.5, mean CE of both players' action x2.0 and jumps x0.5. ``delta_scale`` (per delta
    column) measures the deltas in units of their typical size; ``robust`` then uses a Huber loss.
    """
    target = true_delta(batch, layout)
    gated = "continuous_change_logits" in outputs
    pred = outputs["continuous_delta_raw" if gated else "continuous_delta"].float()
    error = _delta_error(pred, target, delta_scale, robust)
    column_weights = cached_tensor(tuple(_continuous_weights(layout, weights)), error.device)
    if gated:
        # The magnitude is learned where the field changes; the gate learns whether it does.
        changed = (target.abs() > CHANGE_EPSILON).float()
        column_error = (error * changed).sum(0) / changed.sum(0).clamp(min=1)
        gate_loss = F.binary_cross_entropy_with_logits(outputs["continuous_change_logits"].float(), changed)
    else:
        column_error = error.mean(0)
    # Per-column mean, weighted: with one weight for all columns this equals weight * MSE.
    cont_loss = (column_error * column_weights).mean()

    binary_cols = cached_tensor(tuple(layout.binary_cols), error.device)
    binary_target = batch.float_tgt.index_select(1, binary_cols)
    logits = outputs.get("binary_logits_raw", outputs["binary_logits"])
    bin_loss = F.binary_cross_entropy_with_logits(logits.float(), binary_target)

    parts = {"continuous": cont_loss, "binary": bin_loss}
    total = cont_loss + weights.binary * bin_loss
    if gated:
        parts["change_gate"] = gate_loss
        total = total + weights.change_gate * gate_loss
    for name in layout.categoricals:
        field_loss = (
            sum(
                F.cross_entropy(
                    outputs.get(f"p{p}_{name}_logits_raw", outputs[f"p{p}_{name}_logits"]).float(),
                    batch.int_tgt[:, layout.categorical_col(p, name)],
                )
                for p in range(NUM_PLAYERS)
            )
            / NUM_PLAYERS
        )
        weight = {"action": weights.action, "jumps": weights.jumps}.get(name, weights.categorical)
        parts[name] = field_loss
        total = total + weight * field_loss
    return total, {k: v.detach() for k, v in parts.items()}


def predicted_categoricals(
    outputs: dict[str, torch.Tensor], last_ints: torch.Tensor, layout: HeadLayout
) -> torch.Tensor:
    """The next frame's int row (B, I): each predicted categorical's argmax, the others carried
    over from ``last_ints``. With ``action_age_as_embed``, action_age is derived from the predicted
    action the way the encoding defines it (last age + 1, capped, if the action stays; else 0),
    not read from its head: the rule is exact, the head was right on 88% of frames one step
    ahead, and a rollout whose ages stop counting never reaches the frame where a landing or a
    jump squat ends."""
    spec = layout.spec
    ints = last_ints.clone()
    for key, player, name, _ in layout.logit_heads:
        ints[:, layout.categorical_col(player, name)] = outputs[key].argmax(dim=-1).to(ints.dtype)
    if "action_age" in layout.categoricals:
        cap = spec.vocab("action_age") - 1
        for player in range(NUM_PLAYERS):
            action, age = spec.int_col(player, "action"), spec.int_col(player, "action_age")
            kept = ints[:, action] == last_ints[:, action]
            ints[:, age] = torch.where(kept, (last_ints[:, age] + 1).clamp(max=cap), 0).to(ints.dtype)
    return ints


class MetricAccumulator:
    """Sums of errors and hits over an epoch, model and persistence side by side."""

    def __init__(self, layout: HeadLayout):
        self.layout = layout
        self.sums: torch.Tensor | None = None
        self.keys: list[str] = []

    @torch.no_grad()
    def update(
        self, outputs: dict[str, torch.Tensor], batch, loss: torch.Tensor, parts: dict[str, torch.Tensor]
    ):
        layout, spec = self.layout, self.layout.spec
        size = torch.full((), float(batch.float_tgt.shape[0]), device=batch.float_tgt.device)
        values: dict[str, torch.Tensor] = {"count": size, "loss": loss.detach().float() * size}
        for name, part in parts.items():
            values[f"loss/{name}"] = part.float() * size

        delta = true_delta(batch, layout)
        pred = outputs["continuous_delta"].float()
        scales = cached_tensor(
            tuple(spec.scale(n) for _ in range(NUM_PLAYERS) for n in layout.continuous), delta.device
        )
        model_err = ((pred - delta).abs() / scales).sum(0)
        base_err = (delta.abs() / scales).sum(0)
        n = len(layout.continuous)
        for i, name in enumerate(layout.continuous):
            values[f"field/{name}_mae"] = model_err[i] + model_err[n + i]
            values[f"baseline/field/{name}_mae"] = base_err[i] + base_err[n + i]

        binary_cols = cached_tensor(tuple(layout.binary_cols), delta.device)
        binary_target = batch.float_tgt.index_select(1, binary_cols)
        binary_last = batch.float_ctx[:, -1].index_select(1, binary_cols)
        model_hit = ((outputs["binary_logits"] > 0).float() == binary_target).float().sum(0)
        base_hit = (binary_last == binary_target).float().sum(0)
        for i, name in enumerate(BINARY_FIELDS):
            values[f"field/{name}_acc"] = model_hit[i] + model_hit[len(BINARY_FIELDS) + i]
            values[f"baseline/field/{name}_acc"] = base_hit[i] + base_hit[len(BINARY_FIELDS) + i]

        guesses = predicted_categoricals(outputs, batch.int_ctx[:, -1], layout)
        for name in layout.categoricals:
            model_hits = base_hits = change_hits = changes = 0
            for p in range(NUM_PLAYERS):
                col = layout.categorical_col(p, name)
                target, last = batch.int_tgt[:, col], batch.int_ctx[:, -1, col]
                guess = guesses[:, col]
                model_hits = model_hits + (guess == target).float().sum()
                base_hits = base_hits + (last == target).float().sum()
                if name == "action":
                    changed = last != target
                    changes = changes + changed.float().sum()
                    change_hits = change_hits + ((guess == target) & changed).float().sum()
            values[f"field/{name}_acc"] = model_hits
            values[f"baseline/field/{name}_acc"] = base_hits
            if name == "action":
                values["action_changes"] = changes
                values["action_change_hits"] = change_hits

        vector = torch.stack(
            [torch.as_tensor(v, dtype=torch.float32, device=size.device) for v in values.values()]
        )
        if self.sums is None:
            self.keys = list(values)
            self.sums = vector
        else:
            self.sums = self.sums + vector

    def result(self) -> dict[str, float]:
        """Epoch averages: losses per sample, MAEs in game units, accuracies in 0..1."""
        if self.sums is None:
            return {}
        sums = dict(zip(self.keys, self.sums.double().cpu().tolist(), strict=True))
        count = max(sums.pop("count"), 1.0)
        per_player = count * NUM_PLAYERS
        out: dict[str, float] = {}
        for key, value in sums.items():
            if key.startswith("loss"):
                out[key] = value / count
            elif key.startswith(("field/", "baseline/field/")):
                out[key] = value / per_player
        changes = sums.get("action_changes", 0.0)
        out["action_acc"] = out["field/action_acc"]
        out["baseline/action_acc"] = out["baseline/field/action_acc"]
        out["action_change_acc"] = sums.get("action_change_hits", 0.0) / changes if changes else float("nan")
        out["baseline/action_change_acc"] = 0.0
        out["action_change_frames"] = changes
        for key, fields in (("position_mae", ("x", "y")), ("damage_mae", ("percent",))):
            out[key] = sum(out[f"field/{f}_mae"] for f in fields) / len(fields)
            out[f"baseline/{key}"] = sum(out[f"baseline/field/{f}_mae"] for f in fields) / len(fields)
        return out


HEADLINE = ("action_acc", "action_change_acc", "position_mae", "damage_mae")


def lower_is_better(key: str) -> bool:
    return key.endswith("_mae") or key.startswith("loss")


def beats_baseline(metrics: dict[str, float]) -> dict[str, bool]:
    """For each metric with a baseline: does the model do strictly better?"""
    verdict = {}
    for key, value in metrics.items():
        base = metrics.get(f"baseline/{key}")
        if base is None or key.startswith("baseline/"):
            continue
        verdict[key] = value < base if lower_is_better(key) else value > base
    return verdict


def format_table(train: dict[str, float], val: dict[str, float]) -> str:
    """Headline metrics, then per-field errors, each beside persistence, for train and val."""
    keys = list(HEADLINE) + sorted(k for k in val if k.startswith("field/"))
    lines = [f"{'metric':<28}{'train':>10}{'persist':>10}{'val':>10}{'persist':>10}"]
    for key in keys:
        row = f"{key:<28}"
        for split in (train, val):
            row += f"{split.get(key, float('nan')):>10.4f}{split.get('baseline/' + key, float('nan')):>10.4f}"
        lines.append(row)
    return "\n".join(lines)
