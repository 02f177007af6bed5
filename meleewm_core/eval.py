"""Evaluation people can trust: every number next to a trivial baseline on exactly the same frames.

``evaluate_run(run_dir, root)`` loads a run's checkpoint with its own model and encoding config,
opens the run's *validation* games only (``manifest.json`` -> ``game_md5s.val``) and writes
``run_dir/eval/report.json``, ``report.md`` and PNG plots. Three parts:

* **Teacher-forced**: the training metrics (``metrics.MetricAccumulator``: losses, action and
  action-change accuracy, per-field MAE in game units, binary and categorical accuracies) beside
  persistence ("repeat the last frame") and, for x/y, constant velocity (last position plus the
  last frame-to-frame displacement), all on one pass over the same windows.
* **Rollout**: from ``starts`` start points spread evenly over the validation games, the model is
  fed its own predictions for ``steps`` frames with the real controller inputs; the same start
  frames are rolled out by persistence (hold the last real frame) and constant velocity. Error per
  step and field. Fields a model's heads do not predict are carried by persistence
  (``models.next_frame``), so a ``v22`` model's velocities, hitlag, stocks, ... stay frozen at the
  start frame; the report lists them under ``carried_fields``.
* **Per-subsystem** accuracy (teacher-forced), with the definitions in ``SUBSYSTEM_DEFINITIONS``.

Deaths and respawns: a stock loss teleports a character (to the blast zone, then to the respawn
platform), a jump no model should be asked to explain from controller inputs. A rollout step
counts only while neither player, in the real game, is in a death, sleep or respawn action
(ids 0-13) and neither player's stock count differs from the start frame; from the first such
step on the rollout is excluded from the per-step errors (``counts`` says how many rollouts each
step averages). The stock loss itself is scored as an event: a rollout predicts one when its
predicted action enters a death action (0-10) or its predicted stocks drop within the horizon.

A policy run (``policy.POLICY_MODEL_NAME``) is scored teacher-forced against "copy the previous
controller": stick and shoulder MAE, button accuracy and F1.

Imports torch, numpy, pydantic and matplotlib (plots); no polars, so it runs on a GPU box.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict

from meleewm_core.config import ExperimentConfig
from meleewm_core.data import Batch, FrameData, WindowColumns, gather_batch, make_batches
from meleewm_core.encoding import (
    BINARY_FIELDS,
    DEATH_ACTIONS,
    DEATH_OR_RESPAWN_ACTIONS,
    NUM_PLAYERS,
    EncodingSpec,
    HeadLayout,
)
from meleewm_core.metrics import MetricAccumulator, compute_loss
from meleewm_core.models import next_frame

# Rollout errors are reported at these steps (those not beyond --steps).
REPORT_STEPS = (1, 5, 10, 20, 60)
GUARD_ACTIONS = range(178, 183)  # GuardOn, Guard, GuardOff, GuardSetOff, GuardReflect
SHIELD_BREAK_ACTIONS = range(205, 212)  # ShieldBreakFly ... ShieldBreakTeeter (FuraFura)
# Catch* and Throw* of the grabber (212-222), Capture* of the grabbed (223-232), Thrown* (239-243).
GRAB_ACTIONS = (*range(212, 233), *range(239, 244))
# A predicted percent rise below this (game units) is not a hit: percent is stored truncated.
HIT_PERCENT_THRESHOLD = 0.5

SUBSYSTEM_DEFINITIONS = {
    "movement": (
        "Ground and air motion when no hit occurs: (frame, player) pairs whose percent does not change, "
        "whose hitlag and knockback velocities are zero on both frames and who is not dead or respawning. "
        "Scored: x/y position MAE (game units) and on-ground accuracy."
    ),
    "hit_detection": (
        "A hit starts for a player when its percent rises (by at least 0.5) or its hitlag goes from 0 to "
        "above 0 (attacker and victim both freeze in hitlag). Scored as event detection over all "
        "(frame, player) pairs: precision, recall, F1. Persistence never predicts a hit."
    ),
    "damage_knockback": (
        "Given a hit: on frames where the real percent rises, the MAE of the predicted percent change; on "
        "frames where knockback starts (|knockback velocity| goes from 0 to above 0), the MAE of knockback_x/y "
        "(game units per frame)."
    ),
    "action_transitions": (
        "Frames where a player's action changes: accuracy of the predicted action there (persistence: 0), "
        "change recall (the model predicts some change), change precision (a predicted change is the right "
        "action) and accuracy on frames without a change."
    ),
    "shield_grab": (
        "Shield size MAE while shielding (action 178-182 on either frame); shield-break onset (entering "
        "205-211) and grab onset (entering the grab/grabbed/thrown actions 212-232, 239-243) as event F1; "
        "accuracy of being in a grab state on frames where either frame is."
    ),
}

Predictor = Callable[[Batch], dict[str, torch.Tensor]]


class EvalError(RuntimeError):
    """A run cannot be evaluated; the message names the file and the cause."""


# report.json writes NaN (no frames to score) as null; reading it back turns null into NaN again.
Score = Annotated[float, BeforeValidator(lambda value: float("nan") if value is None else value)]


class RolloutReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[int]
    report_steps: list[int]
    num_starts: int
    starts: list[dict[str, Any]]  # game md5 and first predicted frame row of each rollout
    counts: list[int]  # rollouts still valid (no death/respawn yet) at each step
    # field -> predictor ("model", "persistence", "constant_velocity") -> error per step.
    # Continuous fields: MAE in game units; binaries and categoricals: accuracy. "position" is the
    # MAE over both axes and players; "distance" the Euclidean x/y distance, averaged over players.
    fields: dict[str, dict[str, list[Score]]]
    at_steps: dict[str, dict[str, dict[str, Score]]]  # field -> str(step) -> predictor -> value
    carried_fields: list[str]
    death_rule: str
    stock_loss: dict[str, Score]
    sanity: dict[str, Score]


class EvalReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    kind: Literal["world_model", "policy"]
    experiment: str
    checkpoint: Path
    heads: str | None
    device: str
    num_val_games: int
    val_md5s: list[str]
    teacher_forced_frames: int
    # metric -> {"model": v, "persistence" (or "copy_previous"): v, "constant_velocity": v (x/y only)}
    teacher_forced: dict[str, dict[str, Score]]
    rollout: RolloutReport | None
    # One rollout from the start of each validation game long enough (the reference's protocol).
    game_start_steps: int = 0
    rollout_from_game_start: RolloutReport | None = None
    # subsystem -> {"definition", "frames", "predicted_by_heads", "metrics": {metric: {predictor: v}}}
    subsystems: dict[str, dict[str, Any]]
    plots: dict[str, Path]
    # Headline figures, flat so a Dagster asset can show them as metadata.
    position_mae: float | None = None
    position_mae_persistence: float | None = None
    action_acc: float | None = None
    action_acc_persistence: float | None = None
    rollout_last_step: int | None = None
    rollout_position_error: float | None = None
    rollout_position_error_persistence: float | None = None
    rollout_position_error_constant_velocity: float | None = None
    # From game start, at step ``rollout_last_step`` (or the last, if sooner) and at the last step.
    game_start_position_error: float | None = None
    game_start_position_error_constant_velocity: float | None = None
    game_start_position_error_last: float | None = None
    stick_mae: float | None = None
    stick_mae_copy_previous: float | None = None
    button_acc: float | None = None
    button_acc_copy_previous: float | None = None
    seconds: float


# --- loading a run ---------------------------------------------------------------------------------


@dataclass
class EvaluableRun:
    run_dir: Path
    checkpoint: Path
    model: torch.nn.Module
    experiment: ExperimentConfig
    layout: HeadLayout
    manifest: dict[str, Any]
    device: torch.device
    # Per-delta scales of a normalized-loss run, so its loss reads as in training.
    delta_scale: torch.Tensor | None = None

    @property
    def spec(self) -> EncodingSpec:
        return self.layout.spec

    @property
    def is_policy(self) -> bool:
        from meleewm_core.policy import POLICY_MODEL_NAME

        return self.experiment.model.name == POLICY_MODEL_NAME

    @property
    def val_md5s(self) -> list[str]:
        return list(self.manifest["game_md5s"]["val"])


def load_run(run_dir: str | Path, device: str | torch.device = "auto") -> EvaluableRun:
    """The run's best checkpoint (``final.pt`` when no ``best.pt``) and its manifest."""
    import meleewm_core.policy  # noqa: F401  (registers the policy model so its checkpoints load)
    from meleewm_core.train import load_checkpoint, pick_device

    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise EvalError(f"{run_dir}: no manifest.json; is this a run folder (runs/<experiment>/<run-id>/)?")
    manifest = json.loads(manifest_path.read_text())
    val = manifest.get("game_md5s", {}).get("val")
    if not val:
        raise EvalError(f"{manifest_path}: no validation games listed under game_md5s.val")
    checkpoint = next(
        (run_dir / name for name in ("best.pt", "final.pt") if (run_dir / name).is_file()), None
    )
    if checkpoint is None:
        raise EvalError(f"{run_dir}: neither best.pt nor final.pt exists (did training finish an epoch?)")
    device = pick_device(device) if isinstance(device, str) else device
    loaded = load_checkpoint(checkpoint, device)
    delta_scale = loaded.state.get("delta_scale")
    return EvaluableRun(
        run_dir,
        checkpoint,
        loaded.model,
        loaded.experiment,
        loaded.layout,
        manifest,
        device,
        delta_scale.to(device) if delta_scale is not None else None,
    )


def open_val_data(run: EvaluableRun, root, md5s: list[str] | None = None) -> FrameData:
    """The run's validation games (or the games ``md5s`` names, e.g. its training games) from its
    shard set, every one marked ``val``."""
    shards = run.manifest.get("shards", {})
    folder = Path(root.shards_dir) / shards.get("encoding_id", "")
    if not (folder / "index.json").is_file() and shards.get("path"):
        folder = Path(shards["path"])
    if not (folder / "index.json").is_file():
        raise EvalError(
            f"{run.run_dir}: its shard set {shards.get('encoding_id')!r} is neither under {root.shards_dir} "
            f"nor at {shards.get('path')!r}; encode the games with the run's encoding first"
        )
    data = FrameData.from_shards(folder, run.spec)
    wanted = set(run.val_md5s if md5s is None else md5s)
    games = [replace(g, split="val") for g in data.games if g.md5 in wanted]
    missing = wanted - {g.md5 for g in games}
    if missing:
        raise EvalError(
            f"{folder}: {len(missing)} game(s) of the run are not in the shards, e.g. {min(missing)}"
        )
    return FrameData(data.spec, data.shards, games, data.data_fingerprint, data.anomalies)


def model_predictor(model: torch.nn.Module) -> Predictor:
    """The model sees only the context and the next controllers, never the target frame."""
    model.eval()

    @torch.no_grad()
    def predict(batch: Batch) -> dict[str, torch.Tensor]:
        outputs = model(batch.float_ctx, batch.int_ctx, batch.next_ctrl)
        return {k: v.float() for k, v in outputs.items()}

    return predict


# --- small tensor helpers ----------------------------------------------------------------------------


class Tally:
    """Named running sums (of errors, hits, counts) kept as Python floats."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}

    def add(self, key: str, value: torch.Tensor | float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def get(self, key: str) -> float:
        return self.sums.get(key, 0.0)

    def ratio(self, key: str, count_key: str) -> float:
        count = self.get(count_key)
        return self.get(key) / count if count else float("nan")


def _field(frames: torch.Tensor, spec: EncodingSpec, player: int, name: str) -> torch.Tensor:
    """One continuous field of one player in game units (frames: (..., float_per_frame))."""
    return frames[..., spec.float_col(player, name)] / spec.scale(name)


def _in(values: torch.Tensor, ids) -> torch.Tensor:
    return torch.isin(values, torch.as_tensor(list(ids), device=values.device))


def _f1(tally: Tally, prefix: str) -> dict[str, float]:
    tp, fp, fn = tally.get(prefix + "tp"), tally.get(prefix + "fp"), tally.get(prefix + "fn")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall and recall == recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "events": tp + fn, "predicted": tp + fp}


def _count_events(tally: Tally, prefix: str, predicted: torch.Tensor, real: torch.Tensor) -> None:
    tally.add(prefix + "tp", (predicted & real).sum())
    tally.add(prefix + "fp", (predicted & ~real).sum())
    tally.add(prefix + "fn", (~predicted & real).sum())


# --- teacher-forced ----------------------------------------------------------------------------------


def _constant_velocity_xy(batch: Batch, spec: EncodingSpec) -> dict[tuple[int, str], torch.Tensor]:
    """Constant-velocity prediction of x and y (game units) from the last two context frames."""
    last, prev = (
        batch.float_ctx[:, -1],
        batch.float_ctx[:, -2] if batch.float_ctx.shape[1] > 1 else batch.float_ctx[:, -1],
    )
    return {
        (p, name): 2 * _field(last, spec, p, name) - _field(prev, spec, p, name)
        for p in range(NUM_PLAYERS)
        for name in ("x", "y")
    }


def _subsystem_update(tally: Tally, pred_f, pred_i, batch: Batch, spec: EncodingSpec) -> None:
    """Accumulate every subsystem's sums for one batch (predicted frame vs real, per player)."""
    last_f, last_i = batch.float_ctx[:, -1], batch.int_ctx[:, -1]
    true_f, true_i = batch.float_tgt, batch.int_tgt
    cv = _constant_velocity_xy(batch, spec)
    for p in range(NUM_PLAYERS):

        def f(frames, name, p=p):
            return _field(frames, spec, p, name)

        act_col = spec.int_col(p, "action")
        act_last, act_true, act_pred = last_i[:, act_col], true_i[:, act_col], pred_i[:, act_col]
        alive = ~_in(act_last, DEATH_OR_RESPAWN_ACTIONS) & ~_in(act_true, DEATH_OR_RESPAWN_ACTIONS)
        d_percent_true = f(true_f, "percent") - f(last_f, "percent")
        d_percent_pred = f(pred_f, "percent") - f(last_f, "percent")
        hitlag_last, hitlag_true, hitlag_pred = f(last_f, "hitlag"), f(true_f, "hitlag"), f(pred_f, "hitlag")
        kb_last = f(last_f, "knockback_x").abs() + f(last_f, "knockback_y").abs()
        kb_true = f(true_f, "knockback_x").abs() + f(true_f, "knockback_y").abs()

        # movement
        still = (
            (d_percent_true == 0)
            & (hitlag_last == 0)
            & (hitlag_true == 0)
            & (kb_last == 0)
            & (kb_true == 0)
            & alive
        )
        tally.add("movement/frames", still.sum())
        for name in ("x", "y"):
            err_model = (f(pred_f, name) - f(true_f, name)).abs()
            err_persist = (f(last_f, name) - f(true_f, name)).abs()
            err_cv = (cv[(p, name)] - f(true_f, name)).abs()
            tally.add("movement/position_mae/model", err_model[still].sum() / 2)
            tally.add("movement/position_mae/persistence", err_persist[still].sum() / 2)
            tally.add("movement/position_mae/constant_velocity", err_cv[still].sum() / 2)
        ground = spec.float_col(p, "on_ground")
        tally.add("movement/on_ground_acc/model", ((pred_f[:, ground] == true_f[:, ground]) & still).sum())
        tally.add(
            "movement/on_ground_acc/persistence", ((last_f[:, ground] == true_f[:, ground]) & still).sum()
        )

        # hit detection
        hit_true = (d_percent_true >= HIT_PERCENT_THRESHOLD) | ((hitlag_true > 0) & (hitlag_last == 0))
        hit_pred = (d_percent_pred >= HIT_PERCENT_THRESHOLD) | ((hitlag_pred > 0) & (hitlag_last == 0))
        tally.add("hit_detection/frames", hit_true.numel())
        _count_events(tally, "hit_detection/model/", hit_pred, hit_true)
        _count_events(tally, "hit_detection/persistence/", torch.zeros_like(hit_true), hit_true)

        # damage and knockback given a hit
        damaged = d_percent_true >= HIT_PERCENT_THRESHOLD
        tally.add("damage_knockback/frames", damaged.sum())
        tally.add(
            "damage_knockback/percent_change_mae/model",
            (d_percent_pred - d_percent_true).abs()[damaged].sum(),
        )
        tally.add("damage_knockback/percent_change_mae/persistence", d_percent_true.abs()[damaged].sum())
        launched = (kb_true > 0) & (kb_last == 0)
        tally.add("damage_knockback/launch_frames", launched.sum())
        for name in ("knockback_x", "knockback_y"):
            tally.add(
                "damage_knockback/knockback_mae/model",
                (f(pred_f, name) - f(true_f, name)).abs()[launched].sum() / 2,
            )
            tally.add(
                "damage_knockback/knockback_mae/persistence",
                (f(last_f, name) - f(true_f, name)).abs()[launched].sum() / 2,
            )

        # action transitions
        changed = act_true != act_last
        predicted_change = act_pred != act_last
        tally.add("action_transitions/frames", changed.sum())
        tally.add("action_transitions/unchanged_frames", (~changed).sum())
        tally.add("action_transitions/changed_hits/model", ((act_pred == act_true) & changed).sum())
        tally.add("action_transitions/unchanged_hits/model", ((act_pred == act_true) & ~changed).sum())
        tally.add("action_transitions/change_recalled/model", (predicted_change & changed).sum())
        tally.add("action_transitions/predicted_changes/model", predicted_change.sum())
        tally.add(
            "action_transitions/predicted_change_hits/model",
            (predicted_change & (act_pred == act_true)).sum(),
        )

        # shield and grab
        guarding = _in(act_last, GUARD_ACTIONS) | _in(act_true, GUARD_ACTIONS)
        tally.add("shield_grab/shield_frames", guarding.sum())
        tally.add(
            "shield_grab/shield_mae/model", (f(pred_f, "shield") - f(true_f, "shield")).abs()[guarding].sum()
        )
        tally.add(
            "shield_grab/shield_mae/persistence",
            (f(last_f, "shield") - f(true_f, "shield")).abs()[guarding].sum(),
        )
        was_broken = _in(act_last, SHIELD_BREAK_ACTIONS)
        _count_events(
            tally,
            "shield_grab/break/model/",
            _in(act_pred, SHIELD_BREAK_ACTIONS) & ~was_broken,
            _in(act_true, SHIELD_BREAK_ACTIONS) & ~was_broken,
        )
        was_grab, is_grab, pred_grab = (
            _in(act_last, GRAB_ACTIONS),
            _in(act_true, GRAB_ACTIONS),
            _in(act_pred, GRAB_ACTIONS),
        )
        _count_events(tally, "shield_grab/grab_onset/model/", pred_grab & ~was_grab, is_grab & ~was_grab)
        grab_frames = was_grab | is_grab
        tally.add("shield_grab/grab_frames", grab_frames.sum())
        tally.add("shield_grab/grab_state_acc/model", ((pred_grab == is_grab) & grab_frames).sum())
        tally.add("shield_grab/grab_state_acc/persistence", ((was_grab == is_grab) & grab_frames).sum())


def _subsystem_report(tally: Tally, layout: HeadLayout) -> dict[str, dict[str, Any]]:
    predicted_fields = set(layout.continuous) | {"action"} | set(BINARY_FIELDS)
    t = tally

    def pair(key: str, count_key: str, *predictors: str) -> dict[str, float]:
        return {name: t.ratio(f"{key}/{name}", count_key) for name in predictors}

    hit_model, hit_base = _f1(t, "hit_detection/model/"), _f1(t, "hit_detection/persistence/")
    transitions = "action_transitions/"
    out = {
        "movement": {
            "frames": t.get("movement/frames"),
            "predicted_by_heads": {"x", "y"} <= predicted_fields,
            "metrics": {
                "position_mae": pair(
                    "movement/position_mae", "movement/frames", "model", "persistence", "constant_velocity"
                ),
                "on_ground_acc": pair("movement/on_ground_acc", "movement/frames", "model", "persistence"),
            },
        },
        "hit_detection": {
            "frames": t.get("hit_detection/frames"),
            "predicted_by_heads": "percent" in predicted_fields,
            "metrics": {
                **{
                    k: {"model": hit_model[k], "persistence": hit_base[k]}
                    for k in ("precision", "recall", "f1")
                },
                "events": {"model": hit_model["events"]},
            },
        },
        "damage_knockback": {
            "frames": t.get("damage_knockback/frames"),
            "predicted_by_heads": {"percent", "knockback_x"} <= predicted_fields,
            "metrics": {
                "percent_change_mae": pair(
                    "damage_knockback/percent_change_mae", "damage_knockback/frames", "model", "persistence"
                ),
                "knockback_mae": pair(
                    "damage_knockback/knockback_mae", "damage_knockback/launch_frames", "model", "persistence"
                ),
                "launch_frames": {"model": t.get("damage_knockback/launch_frames")},
            },
        },
        "action_transitions": {
            "frames": t.get(transitions + "frames"),
            "predicted_by_heads": True,
            "metrics": {
                "changed_acc": {
                    "model": t.ratio(transitions + "changed_hits/model", transitions + "frames"),
                    "persistence": 0.0,
                },
                "change_recall": {
                    "model": t.ratio(transitions + "change_recalled/model", transitions + "frames"),
                    "persistence": 0.0,
                },
                "change_precision": {
                    "model": t.ratio(
                        transitions + "predicted_change_hits/model", transitions + "predicted_changes/model"
                    ),
                    "persistence": float("nan"),
                },
                "unchanged_acc": {
                    "model": t.ratio(transitions + "unchanged_hits/model", transitions + "unchanged_frames"),
                    "persistence": 1.0,
                },
            },
        },
        "shield_grab": {
            "frames": t.get("shield_grab/shield_frames") + t.get("shield_grab/grab_frames"),
            "predicted_by_heads": "shield" in predicted_fields,
            "metrics": {
                "shield_mae": pair(
                    "shield_grab/shield_mae", "shield_grab/shield_frames", "model", "persistence"
                ),
                "shield_break_f1": {"model": _f1(t, "shield_grab/break/model/")["f1"], "persistence": 0.0},
                "shield_break_events": {"model": _f1(t, "shield_grab/break/model/")["events"]},
                "grab_onset_f1": {"model": _f1(t, "shield_grab/grab_onset/model/")["f1"], "persistence": 0.0},
                "grab_state_acc": pair(
                    "shield_grab/grab_state_acc", "shield_grab/grab_frames", "model", "persistence"
                ),
            },
        },
    }
    for name, entry in out.items():
        entry["definition"] = SUBSYSTEM_DEFINITIONS[name]
        entry["frames"] = int(entry["frames"])
    return out


def teacher_forced(
    predict: Predictor,
    batches,
    layout: HeadLayout,
    experiment: ExperimentConfig,
    *,
    delta_scale: torch.Tensor | None = None,
    progress: bool = False,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]], int]:
    """(metrics, subsystems, frames) over ``batches``; every baseline sees the same windows."""
    from tqdm import tqdm

    spec = layout.spec
    robust = experiment.train.continuous_loss == "huber_normalized"
    metrics = MetricAccumulator(layout)
    tally = Tally()
    frames = 0
    for batch in tqdm(batches, desc="teacher-forced", unit="batch", disable=not progress):
        outputs = predict(batch)
        loss, parts = compute_loss(outputs, batch, layout, experiment.train.loss_weights, delta_scale, robust)
        metrics.update(outputs, batch, loss, parts)
        pred_f, pred_i = next_frame(
            outputs, batch.float_ctx[:, -1], batch.int_ctx[:, -1], batch.next_ctrl, layout
        )
        for (p, name), guess in _constant_velocity_xy(batch, spec).items():
            tally.add(f"cv/{name}", (guess - _field(batch.float_tgt, spec, p, name)).abs().sum())
        _subsystem_update(tally, pred_f, pred_i, batch, spec)
        frames += batch.float_tgt.shape[0]
    result = metrics.result()
    table: dict[str, dict[str, float]] = {}
    for key, value in result.items():
        if key.startswith("baseline/"):
            continue
        entry = {"model": value}
        if f"baseline/{key}" in result:
            entry["persistence"] = result[f"baseline/{key}"]
        table[key] = entry
    per_player = max(frames * NUM_PLAYERS, 1)
    for name in ("x", "y"):
        if f"field/{name}_mae" in table:
            table[f"field/{name}_mae"]["constant_velocity"] = tally.get(f"cv/{name}") / per_player
    if "position_mae" in table:
        table["position_mae"]["constant_velocity"] = (tally.get("cv/x") + tally.get("cv/y")) / (
            2 * per_player
        )
    return table, _subsystem_report(tally, layout), frames


# --- rollout -----------------------------------------------------------------------------------------


@dataclass
class RolloutTrace:
    """Per-step arrays of a rollout batch, kept for the report and the trajectory plots."""

    report: RolloutReport
    # (N, S, players, 2) x/y in game units for the real game, the model and constant velocity.
    true_xy: np.ndarray
    model_xy: np.ndarray
    cv_xy: np.ndarray
    valid: np.ndarray  # (N, S) bool
    # (N, S, players) action ids of the real game and the model.
    true_actions: np.ndarray
    model_actions: np.ndarray


def val_arrays(data: FrameData) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    """Validation games' rows concatenated, and (md5, first row, frames) per game."""
    floats, ints, games, offset = [], [], [], 0
    for game in data.games:
        if game.split != "val":
            continue
        f, i = data.shards[game.shard]
        floats.append(np.asarray(f[game.offset : game.offset + game.num_frames]))
        ints.append(np.asarray(i[game.offset : game.offset + game.num_frames]))
        games.append((game.md5, offset, game.num_frames))
        offset += game.num_frames
    if not games:
        raise EvalError("no validation games to roll out")
    return np.concatenate(floats), np.concatenate(ints), games


def choose_starts(
    ints: np.ndarray,
    games: list[tuple[str, int, int]],
    spec: EncodingSpec,
    context_len: int,
    steps: int,
    starts: int,
    *,
    from_game_start: bool = False,
) -> list[tuple[str, int]]:
    """``starts`` (md5, row) of first predicted frames, spread evenly over every game's valid rows.

    A start needs ``context_len`` real frames before it (at least 2, for constant velocity), room
    for ``steps`` frames, and both players alive and not respawning on its last context frame.
    ``from_game_start`` takes instead the first such row of each game (of ``starts`` games, spread
    evenly, where there are more).
    """
    action_cols = [spec.int_col(p, "action") for p in range(NUM_PLAYERS)]
    candidates = []
    for md5, first, num_frames in games:
        rows = np.arange(first + max(context_len, 2), first + num_frames - steps + 1)
        if from_game_start:
            rows = rows[:1]
        if len(rows) == 0:
            continue
        last_actions = ints[rows - 1][:, action_cols]
        alive = ~np.isin(last_actions, list(DEATH_OR_RESPAWN_ACTIONS)).any(1)
        candidates += [(md5, int(r)) for r in rows[alive]]
    if not candidates:
        raise EvalError(
            f"no validation game is long enough for a rollout of {steps} steps after {context_len} frames"
        )
    picks = np.unique(np.linspace(0, len(candidates) - 1, min(starts, len(candidates))).round().astype(int))
    return [candidates[i] for i in picks]


def rollout(
    predict: Predictor,
    data: FrameData,
    layout: HeadLayout,
    context_len: int,
    *,
    steps: int = 60,
    starts: int = 64,
    from_game_start: bool = False,
    device: torch.device | str = "cpu",
) -> RolloutTrace:
    """Roll ``predict`` out on its own predictions with the real controllers; baselines alike.

    ``from_game_start`` rolls out once from each validation game's first ``context_len`` frames
    (the countdown before "GO"; at most ``starts`` games), as the reference implementation's
    ``rollout.py`` does."""
    spec = layout.spec
    device = torch.device(device)
    floats_np, ints_np, games = val_arrays(data)
    chosen = choose_starts(ints_np, games, spec, context_len, steps, starts, from_game_start=from_game_start)
    floats = torch.from_numpy(floats_np).to(device)
    ints = torch.from_numpy(ints_np).to(device).long()
    cols = WindowColumns(spec, context_len, device)
    start_rows = torch.tensor([row for _, row in chosen], device=device)
    n = len(chosen)

    opening = gather_batch(floats, ints, start_rows, cols)
    ctx_f, ctx_i = opening.float_ctx.clone(), opening.int_ctx.clone()
    hold_f, hold_i = ctx_f[:, -1].clone(), ctx_i[:, -1].clone()  # persistence holds the last real frame
    prev_f = floats[start_rows - 2]
    stock_cols = [spec.float_col(p, "stocks") for p in range(NUM_PLAYERS)]
    start_stocks = torch.round(hold_f[:, stock_cols] / spec.scale("stocks"))
    action_cols = [spec.int_col(p, "action") for p in range(NUM_PLAYERS)]

    continuous = list(spec.continuous_fields)
    categoricals = list(spec.categorical_fields)
    names = ["position", *continuous, *BINARY_FIELDS, *categoricals]
    errors = {name: {"model": torch.zeros(steps), "persistence": torch.zeros(steps)} for name in names}
    for name in ("position", "x", "y"):
        errors[name]["constant_velocity"] = torch.zeros(steps)
    counts = torch.zeros(steps)
    valid = torch.zeros(n, steps, dtype=torch.bool)
    xy = {k: torch.zeros(n, steps, NUM_PLAYERS, 2) for k in ("true", "model", "persistence", "cv")}
    actions = {k: torch.zeros(n, steps, NUM_PLAYERS, dtype=torch.long) for k in ("true", "model")}
    ended = torch.zeros(n, dtype=torch.bool, device=device)
    true_loss_step = torch.full((n,), -1, dtype=torch.long)
    pred_loss_step = torch.full((n,), -1, dtype=torch.long)
    min_percent = float("inf")
    action_changes = {"model": 0.0, "true": 0.0}

    for step in range(steps):
        real = gather_batch(floats, ints, start_rows + step, cols)
        outputs = predict(Batch(ctx_f, ctx_i, real.next_ctrl, real.float_tgt, real.int_tgt))
        pred_f, pred_i = next_frame(outputs, ctx_f[:, -1], ctx_i[:, -1], real.next_ctrl, layout)

        true_stocks = torch.round(real.float_tgt[:, stock_cols] / spec.scale("stocks"))
        true_actions = real.int_tgt[:, action_cols]
        actions["true"][:, step], actions["model"][:, step] = true_actions.cpu(), pred_i[:, action_cols].cpu()
        ended |= _in(true_actions, DEATH_OR_RESPAWN_ACTIONS).any(1) | (true_stocks != start_stocks).any(1)
        lost = (true_stocks < start_stocks).any(1).cpu() & (true_loss_step < 0)
        true_loss_step[lost] = step
        pred_stocks = torch.round(pred_f[:, stock_cols] / spec.scale("stocks"))
        pred_dead = _in(pred_i[:, action_cols], DEATH_ACTIONS).any(1) | (pred_stocks < start_stocks).any(1)
        newly = pred_dead.cpu() & (pred_loss_step < 0)
        pred_loss_step[newly] = step
        ok = ~ended
        valid[:, step] = ok.cpu()
        counts[step] = ok.sum().item()

        candidates = {"model": (pred_f, pred_i), "persistence": (hold_f, hold_i)}
        for who, (frame_f, frame_i) in candidates.items():
            for name in continuous:
                err = sum(
                    (_field(frame_f, spec, p, name) - _field(real.float_tgt, spec, p, name)).abs()
                    for p in range(NUM_PLAYERS)
                )
                errors[name][who][step] = (err / NUM_PLAYERS)[ok].sum().item()
            for name in BINARY_FIELDS:
                hit = sum(
                    (
                        frame_f[:, spec.float_col(p, name)] == real.float_tgt[:, spec.float_col(p, name)]
                    ).float()
                    for p in range(NUM_PLAYERS)
                )
                errors[name][who][step] = (hit / NUM_PLAYERS)[ok].sum().item()
            for name in categoricals:
                hit = sum(
                    (frame_i[:, spec.int_col(p, name)] == real.int_tgt[:, spec.int_col(p, name)]).float()
                    for p in range(NUM_PLAYERS)
                )
                errors[name][who][step] = (hit / NUM_PLAYERS)[ok].sum().item()
            errors["position"][who][step] = (errors["x"][who][step] + errors["y"][who][step]) / 2
        cv_err = {}
        for name in ("x", "y"):
            err = 0
            for p in range(NUM_PLAYERS):
                last, before = _field(hold_f, spec, p, name), _field(prev_f, spec, p, name)
                guess = last + (step + 1) * (last - before)
                err = err + (guess - _field(real.float_tgt, spec, p, name)).abs()
                xy["cv"][:, step, p, "xy".index(name)] = guess.cpu()
                xy["persistence"][:, step, p, "xy".index(name)] = last.cpu()
                xy["true"][:, step, p, "xy".index(name)] = _field(real.float_tgt, spec, p, name).cpu()
                xy["model"][:, step, p, "xy".index(name)] = _field(pred_f, spec, p, name).cpu()
            cv_err[name] = (err / NUM_PLAYERS)[ok].sum().item()
            errors[name]["constant_velocity"][step] = cv_err[name]
        errors["position"]["constant_velocity"][step] = (cv_err["x"] + cv_err["y"]) / 2

        percents = torch.stack([_field(pred_f, spec, p, "percent") for p in range(NUM_PLAYERS)], 1)
        if ok.any():
            min_percent = min(min_percent, percents[ok].min().item())
            action_changes["model"] += (pred_i[:, action_cols] != ctx_i[:, -1, action_cols])[ok].sum().item()
            action_changes["true"] += (
                (real.int_tgt[:, action_cols] != ints[start_rows + step - 1][:, action_cols])[ok].sum().item()
            )

        ctx_f = torch.cat([ctx_f[:, 1:], pred_f[:, None]], dim=1)
        ctx_i = torch.cat([ctx_i[:, 1:], pred_i[:, None]], dim=1)

    errors["distance"] = {
        who: (torch.linalg.vector_norm(xy[key] - xy["true"], dim=-1).mean(-1) * valid).sum(0)
        for who, key in (("model", "model"), ("persistence", "persistence"), ("constant_velocity", "cv"))
    }
    safe_counts = counts.clamp(min=1)
    fields = {
        name: {
            who: (values / safe_counts).where(counts > 0, torch.tensor(float("nan"))).tolist()
            for who, values in by.items()
        }
        for name, by in errors.items()
    }
    report_steps = [s for s in REPORT_STEPS if s <= steps]
    if steps not in report_steps:
        report_steps.append(steps)
    at_steps = {
        name: {str(s): {who: values[s - 1] for who, values in by.items()} for s in report_steps}
        for name, by in fields.items()
    }

    real_event, pred_event = true_loss_step >= 0, pred_loss_step >= 0
    hits = real_event & pred_event
    stock_loss = {
        "real_events": float(real_event.sum()),
        "predicted_events": float(pred_event.sum()),
        "hits": float(hits.sum()),
        "recall": float(hits.sum() / real_event.sum()) if real_event.any() else float("nan"),
        "precision": float(hits.sum() / pred_event.sum()) if pred_event.any() else float("nan"),
        "timing_mae_frames": float((true_loss_step - pred_loss_step)[hits].abs().float().mean())
        if hits.any()
        else float("nan"),
        "persistence_recall": 0.0 if real_event.any() else float("nan"),
    }
    valid_steps = max(float(counts.sum()) * NUM_PLAYERS, 1.0)
    sanity = {
        "min_predicted_percent": min_percent if min_percent != float("inf") else float("nan"),
        "model_action_change_rate": action_changes["model"] / valid_steps,
        "real_action_change_rate": action_changes["true"] / valid_steps,
    }
    game_first = {md5: offset for md5, offset, _ in games}
    carried = [n for n in continuous if n not in layout.continuous] + [
        n for n in categoricals if n not in layout.categoricals
    ]
    report = RolloutReport(
        steps=list(range(1, steps + 1)),
        report_steps=report_steps,
        num_starts=n,
        starts=[{"md5": md5, "row": row - game_first[md5]} for md5, row in chosen],
        counts=[int(c) for c in counts.tolist()],
        fields=fields,
        at_steps=at_steps,
        carried_fields=carried,
        death_rule=(
            "a rollout stops counting at the first step where, in the real game, either player is in a death, "
            "sleep or respawn action (ids 0-13) or either stock count differs from the start frame; stock losses "
            "are scored separately under stock_loss"
        ),
        stock_loss=stock_loss,
        sanity=sanity,
    )
    return RolloutTrace(
        report,
        xy["true"].numpy(),
        xy["model"].numpy(),
        xy["cv"].numpy(),
        valid.numpy(),
        actions["true"].numpy(),
        actions["model"].numpy(),
    )


# --- the whole evaluation ------------------------------------------------------------------------------


def _policy_table(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    return {
        key: {
            "model": value,
            **({"copy_previous": metrics[f"baseline/{key}"]} if f"baseline/{key}" in metrics else {}),
        }
        for key, value in metrics.items()
        if not key.startswith("baseline/")
    }


def evaluate_run(
    run_dir: str | Path,
    root,
    *,
    steps: int = 60,
    starts: int = 64,
    device: str = "auto",
    batch_size: int = 1024,
    plot_starts: int = 4,
    game_start_steps: int = 500,
    progress: bool = True,
) -> EvalReport:
    """Evaluate a run on its validation games; write ``run_dir/eval/{report.json, report.md, *.png}``.

    Besides the ``starts`` rollouts of ``steps`` frames spread over the validation games, rolls out
    ``game_start_steps`` frames from the start of each validation game long enough (of ``starts``
    of them where there are more; 0: not at all), the protocol of the reference implementation's
    figures.
    """
    from meleewm_core.plots import plot_policy, plot_rollout_errors, plot_subsystems, plot_trajectories
    from meleewm_core.store import write_json_atomic, write_text_atomic

    started = time.perf_counter()
    run = load_run(run_dir, device)
    data = open_val_data(run, root)
    context_len = run.experiment.model.context_len
    batches = make_batches(
        data,
        "val",
        mode="memory",
        batch_size=batch_size,
        context_len=context_len,
        device=run.device,
        shuffle=False,
    )
    out_dir = run.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    common = dict(
        run_dir=run.run_dir,
        experiment=run.experiment.name,
        checkpoint=run.checkpoint,
        device=str(run.device),
        num_val_games=len(run.val_md5s),
        val_md5s=run.val_md5s,
    )

    if run.is_policy:
        from meleewm_core.policy import evaluate_policy

        metrics = evaluate_policy(run.model, batches, run.experiment)
        plots = {"policy": plot_policy(metrics, out_dir / "policy.png")}
        report = EvalReport(
            kind="policy",
            heads=None,
            teacher_forced_frames=batches.num_windows,
            teacher_forced=_policy_table(metrics),
            rollout=None,
            subsystems={},
            plots=plots,
            stick_mae=metrics["stick_mae"],
            stick_mae_copy_previous=metrics["baseline/stick_mae"],
            button_acc=metrics["button_acc"],
            button_acc_copy_previous=metrics["baseline/button_acc"],
            seconds=0.0,
            **common,
        )
    else:
        predict = model_predictor(run.model)
        table, subsystems, frames = teacher_forced(
            predict, batches, run.layout, run.experiment, delta_scale=run.delta_scale, progress=progress
        )
        trace = rollout(predict, data, run.layout, context_len, steps=steps, starts=starts, device=run.device)
        plots = {
            "rollout_error": plot_rollout_errors(trace.report, out_dir / "rollout_error.png"),
            "trajectories": plot_trajectories(trace, out_dir / "trajectories.png", count=plot_starts),
            "subsystems": plot_subsystems(subsystems, out_dir / "subsystems.png"),
        }
        last = trace.report.steps[-1]
        position = trace.report.fields["position"]
        from_start = None
        if game_start_steps:
            try:
                from_start = rollout(
                    predict,
                    data,
                    run.layout,
                    context_len,
                    steps=game_start_steps,
                    starts=starts,
                    from_game_start=True,
                    device=run.device,
                ).report
            except EvalError:  # no validation game is long enough: the report says so
                pass
        if from_start is not None:
            plots["rollout_from_game_start"] = plot_rollout_errors(
                from_start,
                out_dir / "rollout_from_game_start.png",
                title=f"Rollout from the start of {from_start.num_starts} validation game(s), real controller inputs",
            )
            start_position = from_start.fields["position"]
            at = min(last, game_start_steps) - 1
            from_start_headline = dict(
                game_start_position_error=start_position["model"][at],
                game_start_position_error_constant_velocity=start_position["constant_velocity"][at],
                game_start_position_error_last=start_position["model"][-1],
            )
        else:
            from_start_headline = {}
        report = EvalReport(
            kind="world_model",
            heads=run.experiment.model.heads,
            teacher_forced_frames=frames,
            teacher_forced=table,
            rollout=trace.report,
            subsystems=subsystems,
            plots=plots,
            position_mae=table["position_mae"]["model"],
            position_mae_persistence=table["position_mae"]["persistence"],
            action_acc=table["action_acc"]["model"],
            action_acc_persistence=table["action_acc"]["persistence"],
            rollout_last_step=last,
            rollout_position_error=position["model"][-1],
            rollout_position_error_persistence=position["persistence"][-1],
            rollout_position_error_constant_velocity=position["constant_velocity"][-1],
            game_start_steps=game_start_steps,
            rollout_from_game_start=from_start,
            **from_start_headline,
            seconds=0.0,
            **common,
        )
    report.seconds = round(time.perf_counter() - started, 3)
    write_json_atomic(out_dir / "report.json", json.loads(report.model_dump_json()))
    write_text_atomic(out_dir / "report.md", report_markdown(report))
    if progress:
        print(
            f"wrote {out_dir / 'report.json'}, report.md and {len(report.plots)} plot(s) in {report.seconds:.1f}s"
        )
    return report


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def _table(rows: list[list[Any]], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


GAME_START_PREFACE = (
    "One rollout per validation game, its context the game's first frames (the countdown before GO, "
    "when the players cannot act yet), as the reference implementation's rollout.py seeds it. Players "
    "barely move early on, so persistence and constant velocity are strong here: compare against them."
)


def _rollout_lines(title: str, rollout: RolloutReport, *, preface: str = "") -> list[str]:
    lines = [title, ""] + ([preface, ""] if preface else [])
    header = ["field", "predictor"] + [f"step {s}" for s in rollout.report_steps]
    rows = []
    for name in ("position", "distance", "x", "y", "percent", "shield", "action", "on_ground"):
        for who in rollout.at_steps.get(name, {}).get(str(rollout.report_steps[0]), {}):
            rows.append([name, who] + [rollout.at_steps[name][str(s)][who] for s in rollout.report_steps])
    rows.append(["(rollouts counted)", ""] + [rollout.counts[s - 1] for s in rollout.report_steps])
    lines += _table(rows, header)
    lines += [
        "",
        "Position: absolute error over both axes and players; distance: Euclidean x/y distance, averaged "
        "over players; percent and shield: MAE; all in game units. Action and on_ground: accuracy.",
        f"Deaths and respawns: {rollout.death_rule}.",
        "",
        "Fields the heads do not predict, carried by persistence during the rollout: "
        + (", ".join(rollout.carried_fields) or "none")
        + ".",
        "",
        "Stock losses as events: " + ", ".join(f"{k} {_fmt(v)}" for k, v in rollout.stock_loss.items()) + ".",
        "",
        "Sanity: " + ", ".join(f"{k} {_fmt(v)}" for k, v in rollout.sanity.items()) + ".",
        "",
    ]
    return lines


def report_markdown(report: EvalReport) -> str:
    """The report a person reads: tables of model against baselines, then what the plots show."""
    lines = [
        f"# Evaluation of {report.experiment} ({report.run_dir.name})",
        "",
        f"Checkpoint `{report.checkpoint.name}`, {report.num_val_games} validation games (never trained on), "
        f"{report.teacher_forced_frames:,} teacher-forced windows, device {report.device}, {report.seconds:.1f}s.",
        "",
    ]
    if report.kind == "policy":
        lines += ["## Imitation policy against copy-the-previous-controller", ""]
        rows = [[k, v["model"], v.get("copy_previous")] for k, v in report.teacher_forced.items()]
        lines += _table(rows, ["metric", "policy", "copy previous"])
        lines += [
            "",
            "Stick and shoulder errors are in encoded units (0..1, half the game's -1..1 stick range).",
            "",
        ]
        return "\n".join(lines) + "\n"

    lines += [f"Heads: `{report.heads}`.", "", "## Teacher-forced (one step, real context)", ""]
    rows = [
        [k, v["model"], v.get("persistence"), v.get("constant_velocity")]
        for k, v in report.teacher_forced.items()
    ]
    lines += _table(rows, ["metric", "model", "persistence", "constant velocity"])
    lines += ["", "MAE in game units; accuracies in 0..1.", ""]
    if report.rollout is not None:
        lines += _rollout_lines(
            f"## Rollout ({report.rollout.num_starts} starts, {report.rollout.steps[-1]} steps, real controllers)",
            report.rollout,
        )
    if report.rollout_from_game_start is not None:
        lines += _rollout_lines(
            f"## Rollout from each validation game's start ({report.rollout_from_game_start.num_starts} game(s), "
            f"{report.game_start_steps} steps): the reference's protocol",
            report.rollout_from_game_start,
            preface=GAME_START_PREFACE,
        )
    elif report.game_start_steps:
        lines += [
            "## Rollout from each validation game's start",
            "",
            f"Skipped: no validation game has {report.game_start_steps} frames to roll out after its first "
            "context frames.",
            "",
        ]
    lines += ["## Per-subsystem accuracy (teacher-forced)", ""]
    for name, entry in report.subsystems.items():
        carried = (
            ""
            if entry["predicted_by_heads"]
            else " The heads do not predict every field involved: those are carried by persistence."
        )
        lines += [f"### {name} ({_fmt(entry['frames'])} frames)", "", entry["definition"] + carried, ""]
        rows = [
            [metric, by.get("model"), by.get("persistence"), by.get("constant_velocity")]
            for metric, by in entry["metrics"].items()
        ]
        lines += _table(rows, ["metric", "model", "persistence", "constant velocity"]) + [""]
    lines += [
        "## Plots",
        "",
        "* `rollout_error.png`: error against rollout step for the model (solid), persistence and constant "
        "velocity (dashed); lower is better for errors, higher for accuracies.",
        "* `trajectories.png`: real against predicted x/y paths of both players for a few starts; a cross marks "
        "where a death/respawn ends the scored part.",
        "* `subsystems.png`: each subsystem's metrics, model against persistence.",
    ]
    if "rollout_from_game_start" in report.plots:
        lines.append(
            "* `rollout_from_game_start.png`: the same curves for the rollouts from each game's start."
        )
    return "\n".join(lines) + "\n"
