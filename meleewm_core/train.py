"""Training, in the spirit of nanoGPT's train.py: read it top to bottom.

``train_run`` is the whole run: resolve the config, make sure the shards exist, open the data,
build (or resume) the model, then ``fit`` epoch by epoch, writing ``best.pt`` (lowest validation
loss), ``final.pt`` (the latest epoch) and ``manifest.json`` into ``runs/<experiment>/<run-id>/``.
``fit`` takes any iterables of ``data.Batch``, so tests and benchmarks feed it synthetic tensors.

A checkpoint holds the weights, optimizer state, epoch, step, the experiment (model, training and
encoding config) and the loss normalisation, so ``load_checkpoint(path)`` needs no other file.

Imports only torch, numpy, pydantic and the standard library (wandb optionally); encoding shards
needs polars and is imported only when shards are missing.
"""

from __future__ import annotations

import collections
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from meleewm_core.augment import WindowAugment, mirrored_grounds
from meleewm_core.config import ExperimentConfig, TrainConfig
from meleewm_core.data import FrameData, make_batches, preflight
from meleewm_core.encoding import (
    BINARY_FIELDS,
    BLAST_SIDES,
    CONTROLLER_FIELDS,
    DEATH_ACTIONS,
    DEATH_OR_RESPAWN_ACTIONS,
    DEATH_SIDE,
    FALL_ACTIONS,
    FREE_FALL_ACTIONS,
    JUMP_ACTIONS,
    NUM_PLAYERS,
    REBIRTH_ACTION,
    EncodingSpec,
    HeadLayout,
    head_layout,
)
from meleewm_core.metrics import MetricAccumulator, beats_baseline, compute_loss, format_table, position_loss
from meleewm_core.models import build_model, count_parameters, predicted_frame
from meleewm_core.models.mlp import (
    DRIFT_CONSTANTS,
    FAST_FALL_STICK,
    STICK_DEADZONE,
    air_drift_speed,
    hit_cell,
    transition_cell,
)

CHECKPOINT_FORMAT = 1
# Short CLI names for the overrides train_run accepts besides dotted keys ("train.lr").
OVERRIDE_KEYS = {
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "max_games": "train.max_games",
    "device": "train.device",
    "wandb": "train.wandb",
    "loader": "train.loader",
    "max_train_batches": "train.max_train_batches",
    "max_val_batches": "train.max_val_batches",
}


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message names the epoch, the batch and the input fields."""


class RunResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    manifest: dict[str, Any]
    best_checkpoint: Path
    final_checkpoint: Path
    metrics: dict[str, Any]


# --- small pure helpers ------------------------------------------------------------------------


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def learning_rate(
    step: int, total_steps: int, base_lr: float, warmup_steps: int, min_fraction: float
) -> float:
    """Linear warmup, then cosine decay from ``base_lr`` to ``base_lr * min_fraction``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def apply_overrides(experiment: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """Return ``experiment`` with overrides (short names or dotted keys; None means unset) applied."""
    tree = experiment.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        dotted = OVERRIDE_KEYS.get(key, key)
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            if part not in node or not isinstance(node[part], dict):
                raise KeyError(f"unknown override {key!r}")
            node = node[part]
        if leaf not in node:
            raise KeyError(f"unknown override {key!r}")
        node[leaf] = value
    return ExperimentConfig.model_validate(tree)


def nonfinite_fields(batch, spec: EncodingSpec) -> list[str]:
    """Names of input columns of ``batch`` holding NaN or inf, with how many values."""
    found = []
    for array_name, names, values in (
        ("float_ctx", spec.float_names, batch.float_ctx.reshape(-1, batch.float_ctx.shape[-1])),
        ("next_ctrl", spec.ctrl_names, batch.next_ctrl),
        ("float_tgt", spec.float_names, batch.float_tgt),
    ):
        bad = (~torch.isfinite(values.float())).sum(0).cpu().tolist()
        found += [f"{array_name}[{names[i]}] ({n} values)" for i, n in enumerate(bad) if n]
    return found


# --- checkpoints ---------------------------------------------------------------------------------


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module
    experiment: ExperimentConfig
    layout: HeadLayout
    epoch: int
    step: int
    state: dict[str, Any]

    @property
    def spec(self) -> EncodingSpec:
        return self.layout.spec


def save_checkpoint(path: Path, model, optimizer, experiment: ExperimentConfig, **extra) -> None:
    from meleewm_core.store import atomic_path

    raw_model = getattr(model, "_orig_mod", model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_state": raw_model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "experiment": experiment.model_dump(),
        "model_config": experiment.model.model_dump(),
        "encoding": experiment.encoding.model_dump(),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


class CheckpointError(ValueError):
    """A checkpoint this version of meleewm cannot rebuild; the message names the file and why."""


def _written_at(path: Path) -> str:
    """The suffix " (written at git commit X)" from the run manifest beside a checkpoint, if it names one."""
    try:
        commit = json.loads((path.parent / "manifest.json").read_text()).get("git_commit")
    except (OSError, ValueError):
        commit = None
    return f" (written at git commit {commit})" if commit else ""


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint from the checkpoint alone."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=device, weights_only=False)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}"
        )
    try:
        experiment = ExperimentConfig.model_validate(state["experiment"])
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise CheckpointError(
            f"{path}: its experiment config does not fit this version of meleewm{_written_at(path)}: "
            f"{problems}; load it with the code that wrote it"
        ) from None
    model = build_model(experiment.encoding, experiment.model)
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise CheckpointError(
            f"{path}: its weights do not fit the model its config builds in this version of "
            f"meleewm{_written_at(path)}: {first}; load it with the code that wrote it"
        ) from None
    model.to(device).eval()
    layout = head_layout(EncodingSpec(experiment.encoding), experiment.model.heads)
    return LoadedCheckpoint(model, experiment, layout, int(state["epoch"]), int(state["step"]), state)


# --- one epoch -------------------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel updates every tensor in one pass: on 2 CPU cores 3.5 -> ~1 ms per step.
    return torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cuda", "cpu")
    )


def use_bf16(device: torch.device, precision: str) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


# A loss: (model outputs, batch) -> (total loss, per-head losses). Metrics: an object with
# ``update(outputs, batch, loss, parts)`` and ``result() -> dict``. Both default to the world
# model's (``metrics.compute_loss``, ``metrics.MetricAccumulator``); other models (an imitation
# policy) pass their own and reuse the rest of the trainer.
LossFn = Callable[[dict[str, torch.Tensor], Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _default_loss(layout: HeadLayout, experiment: ExperimentConfig, delta_scale) -> LossFn:
    weights = experiment.train.loss_weights
    robust = experiment.train.continuous_loss == "huber_normalized"
    return lambda outputs, batch: compute_loss(outputs, batch, layout, weights, delta_scale, robust)


def _later_steps_loss(layout: HeadLayout, experiment: ExperimentConfig, delta_scale) -> LossFn | None:
    """What ``rollout_loss`` scores after the first step: None for every head (``rollout_loss:
    all``), else the x/y error alone."""
    if experiment.train.rollout_loss == "all":
        return None
    robust = experiment.train.continuous_loss == "huber_normalized"
    return lambda outputs, batch: position_loss(outputs, batch, layout, delta_scale, robust)


def rollout_loss(
    forward,
    batch,
    loss_fn: LossFn,
    layout: HeadLayout,
    device: torch.device,
    bf16: bool,
    later_loss: LossFn | None = None,
):
    """The loss of ``batch.horizon`` successive predictions, each made from the context the
    previous ones built (real controllers, predicted state), and the first step's outputs.

    Step 0 is the one-step loss; each further step scores the model against the real frame from
    wherever its own rollout has got to, so drift is paid for and gradients flow back through the
    predicted continuous fields to the steps that caused it. Without ``later_loss`` the loss is the
    mean of ``loss_fn`` over the steps; with it, step 0's ``loss_fn`` plus the mean of
    ``later_loss`` over the later steps (reported as ``rollout_<part>``).
    """
    float_ctx, int_ctx = batch.float_ctx, batch.int_ctx
    steps = batch.horizon
    total, later, parts, later_parts, first = 0.0, 0.0, {}, {}, None
    for j in range(steps):
        step = batch.step(j, float_ctx, int_ctx)
        with _autocast(device, bf16):
            outputs = forward(step.float_ctx, step.int_ctx, step.next_ctrl)
        if j == 0 or later_loss is None:
            loss, step_parts = loss_fn(outputs, step)
            total = total + loss
            parts = {k: parts.get(k, 0.0) + v for k, v in step_parts.items()}
        else:
            loss, step_parts = later_loss(outputs, step)
            later = later + loss
            later_parts = {k: later_parts.get(k, 0.0) + v for k, v in step_parts.items()}
        if j == 0:
            first = outputs
        if j + 1 < steps:
            floats, ints = predicted_frame(outputs, float_ctx[:, -1], int_ctx[:, -1], step.next_ctrl, layout)
            float_ctx = torch.cat([float_ctx[:, 1:], floats[:, None].to(float_ctx.dtype)], dim=1)
            int_ctx = torch.cat([int_ctx[:, 1:], ints[:, None]], dim=1)
    if later_loss is None:
        return first, total / steps, {k: v / steps for k, v in parts.items()}
    if steps == 1:
        return first, total, parts
    return (
        first,
        total + later / (steps - 1),
        {**parts, **{f"rollout_{k}": v / (steps - 1) for k, v in later_parts.items()}},
    )


@torch.no_grad()
def evaluate(
    model,
    batches: Iterable,
    layout: HeadLayout,
    experiment: ExperimentConfig,
    device,
    delta_scale=None,
    *,
    loss_fn: LossFn | None = None,
    make_metrics: Callable[[], Any] | None = None,
):
    model.eval()
    loss_fn = loss_fn or _default_loss(layout, experiment, delta_scale)
    metrics = make_metrics() if make_metrics else MetricAccumulator(layout)
    bf16 = use_bf16(device, experiment.train.precision)
    for batch in batches:
        with _autocast(device, bf16):
            outputs = model(batch.float_ctx, batch.int_ctx, batch.next_ctrl)
        loss, parts = loss_fn(outputs, batch)
        metrics.update(outputs, batch, loss, parts)
    return metrics.result()


def fit(
    model: torch.nn.Module,
    experiment: ExperimentConfig,
    train_batches: Iterable,
    val_batches: Iterable,
    *,
    device: torch.device,
    delta_scale: torch.Tensor | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    start_step: int = 0,
    on_epoch: Callable[[dict[str, Any], torch.optim.Optimizer], None] | None = None,
    progress: bool = True,
    loss_fn: LossFn | None = None,
    make_metrics: Callable[[], Any] | None = None,
) -> list[dict[str, Any]]:
    """Train from ``start_epoch`` to ``experiment.train.epochs``; returns one record per epoch."""
    from tqdm import tqdm

    cfg = experiment.train
    spec = EncodingSpec(experiment.encoding)
    layout = head_layout(spec, experiment.model.heads)
    context_len = experiment.model.context_len
    later_loss = _later_steps_loss(layout, experiment, delta_scale) if loss_fn is None else None
    loss_fn = loss_fn or _default_loss(layout, experiment, delta_scale)
    new_metrics = make_metrics or (lambda: MetricAccumulator(layout))
    if optimizer is None:
        optimizer = make_optimizer(model, cfg, device)
    steps_per_epoch = len(train_batches) if hasattr(train_batches, "__len__") else None
    total_steps = cfg.epochs * steps_per_epoch if steps_per_epoch else None
    # Checking the loss forces a host sync; on CUDA do it every few steps and keep those batches
    # so the failing one can still be named and inspected.
    check_every = 8 if device.type == "cuda" else 1
    compile_model = cfg.compile if cfg.compile is not None else device.type == "cuda"
    forward = torch.compile(model) if compile_model else model
    bf16 = use_bf16(device, cfg.precision)

    step = start_step
    records = []
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        model.train()
        metrics = new_metrics()
        recent: collections.deque = collections.deque(maxlen=check_every)
        started = time.perf_counter()
        samples = 0
        bar = tqdm(
            train_batches,
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="batch",
            disable=not progress,
            dynamic_ncols=True,
        )
        for batch_index, batch in enumerate(bar, start=1):
            if batch_index == 1 and epoch == start_epoch + 1:
                preflight(batch, spec, context_len)
            lr = learning_rate(step, total_steps or step + 1, cfg.lr, cfg.warmup_steps, cfg.min_lr_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            outputs, loss, parts = rollout_loss(forward, batch, loss_fn, layout, device, bf16, later_loss)
            recent.append((batch_index, batch, loss.detach()))
            if len(recent) == check_every or device.type != "cuda":
                _check_finite(recent, epoch, spec)
                recent.clear()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if batch_index % cfg.train_metrics_every == 1 or cfg.train_metrics_every == 1:
                metrics.update(outputs, batch, loss.detach(), parts)
            step += 1
            samples += batch.float_ctx.shape[0]
            if progress and (batch_index % 20 == 0 or batch_index == steps_per_epoch):
                bar.set_postfix(
                    loss=f"{loss.item():.4f}", samples_s=f"{samples / (time.perf_counter() - started):,.0f}"
                )
        _check_finite(recent, epoch, spec)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        train_metrics = metrics.result()
        val_metrics = evaluate(
            model,
            val_batches,
            layout,
            experiment,
            device,
            delta_scale,
            loss_fn=loss_fn,
            make_metrics=make_metrics,
        )
        record = {
            "epoch": epoch,
            "step": step,
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": round(seconds, 3),
            "train_samples": samples,
            "samples_per_s": round(samples / seconds, 1) if seconds else None,
            "train": train_metrics,
            "val": val_metrics,
            "beats_persistence": beats_baseline(val_metrics),
        }
        records.append(record)
        if progress:
            print(
                f"epoch {epoch}: train loss {train_metrics.get('loss', float('nan')):.4f}  "
                f"val loss {val_metrics.get('loss', float('nan')):.4f}  {record['samples_per_s']:,.0f} samples/s"
            )
            print(format_table(train_metrics, val_metrics))
        if on_epoch is not None:
            on_epoch(record, optimizer)
    return records


def _check_finite(recent: collections.deque, epoch: int, spec: EncodingSpec) -> None:
    if not recent:
        return
    losses = torch.stack([loss for _, _, loss in recent])
    if bool(torch.isfinite(losses).all()):
        return
    first = int((~torch.isfinite(losses)).nonzero()[0, 0])
    batch_index, batch, loss = recent[first]
    fields = nonfinite_fields(batch, spec)
    cause = (
        ("non-finite inputs: " + ", ".join(fields))
        if fields
        else ("all inputs finite: the model diverged (lower train.lr or check the loss weights)")
    )
    raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch}, batch {batch_index}: {cause}")


# --- the whole run ---------------------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _machine(device: torch.device) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for package in ("torch", "numpy", "pydantic", "wandb", "polars", "pyarrow", "peppi-py", "meleewm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "packages": versions,
    }


def ensure_shards(experiment: ExperimentConfig, root, *, progress: bool = True) -> Path:
    """The shard folder for this experiment, encoding any of its games not yet in it.

    Where polars or peppi are missing (a GPU box that received only the shards), the existing
    folder for this encoding is used as it is.
    """
    from meleewm_core.shards import encode_experiment_shards, read_index

    try:
        shard_set = encode_experiment_shards(root, experiment, progress=progress)
    except ImportError:
        candidates = [
            p.parent
            for p in sorted(Path(root.shards_dir).glob("*/index.json"))
            if read_index(p.parent).encoding == experiment.encoding
        ]
        if not candidates:
            raise
        return candidates[0]
    if progress and shard_set.new_games:
        print(f"encoded {shard_set.new_games} new games into {shard_set.path}")
    return shard_set.path


def _training_floats(data: FrameData, max_rows: int, cols: list[int] | None = None) -> Iterator[np.ndarray]:
    """Each training game's float rows (all columns, or ``cols``) as float64, until about
    ``max_rows`` rows have been read."""
    rows = 0
    for game, floats, _ in data.game_rows("train"):
        if rows >= max_rows:
            break
        yield np.asarray(floats if cols is None else floats[:, cols], dtype=np.float64)
        rows += game.num_frames


def typical_deltas(data: FrameData, layout: HeadLayout, kind: str, max_rows: int = 2_000_000) -> torch.Tensor:
    """Typical size of each predicted continuous delta over the training games: the standard
    deviation (``mse_normalized``) or the mean absolute change of frames where it changes
    (``huber_normalized``)."""
    cols = layout.continuous_cols
    parts = [np.diff(floats, axis=0) for floats in _training_floats(data, max_rows, cols)]
    if not parts:
        return torch.ones(len(cols))
    deltas = np.concatenate(parts)
    if kind == "mse_normalized":
        scale = deltas.std(0)
    else:
        changed = np.abs(deltas) > 1e-6
        scale = np.abs(deltas).sum(0) / np.maximum(changed.sum(0), 1)
    return torch.tensor(np.maximum(scale, 1e-4), dtype=torch.float32)


def float_statistics(data: FrameData, max_rows: int = 2_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of every float column over the training games."""
    total = squares = None
    rows = 0
    for floats in _training_floats(data, max_rows):
        total = floats.sum(0) if total is None else total + floats.sum(0)
        squares = (floats**2).sum(0) if squares is None else squares + (floats**2).sum(0)
        rows += len(floats)
    if total is None:
        return torch.zeros(data.spec.float_per_frame), torch.ones(data.spec.float_per_frame)
    mean = total / rows
    std = np.sqrt(np.maximum(squares / rows - mean**2, 0.0))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def binary_flip_tables(
    data: FrameData, age_cap: int, min_frames: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the training games flip each binary (facing, invulnerable, on_ground) from one frame to
    the next: (actions, actions, binaries) for (last action, next action) where the action
    changes, (characters, actions, age_cap, binaries) for (character, action, next state_age
    capped at ``age_cap`` - 1) where it stays. An entry is True where at least ``min_frames``
    player-frames took that transition and more than half of them flipped the binary."""
    spec = data.spec
    actions, characters = spec.vocab("action"), spec.vocab("character")
    change_size, stay_size = actions * actions, characters * actions * age_cap
    keys, flips = [], []
    for _, floats, ints in data.game_rows("train"):
        for p in range(NUM_PLAYERS):
            action = np.asarray(ints[:, spec.int_col(p, "action")], dtype=np.int64)
            age = np.clip(np.asarray(ints[1:, spec.int_col(p, "state_age")], dtype=np.int64), 0, age_cap - 1)
            character = np.asarray(ints[:-1, spec.int_col(p, "character")], dtype=np.int64)
            before, after = action[:-1], action[1:]
            keys.append(
                np.where(
                    before != after,
                    before * actions + after,
                    change_size + (character * actions + before) * age_cap + age,
                )
            )
            binaries = np.asarray(floats[:, [spec.float_col(p, name) for name in BINARY_FIELDS]]) > 0.5
            flips.append(binaries[1:] != binaries[:-1])
    size = change_size + stay_size
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    flipped = np.concatenate(flips) if flips else np.zeros((0, len(BINARY_FIELDS)), dtype=bool)
    seen = np.bincount(key, minlength=size)[:, None]
    flip_counts = np.stack(
        [np.bincount(key, weights=flipped[:, i], minlength=size) for i in range(len(BINARY_FIELDS))], axis=1
    )
    decided = (seen >= min_frames) & (flip_counts > seen / 2)
    on_change = decided[:change_size].reshape(actions, actions, -1)
    on_stay = decided[change_size:].reshape(characters, actions, age_cap, -1)
    return torch.from_numpy(on_change), torch.from_numpy(on_stay)


def modal(values: np.ndarray) -> tuple[float, int]:
    """The most common value of ``values`` (rounded to 1e-4) and how many hold it."""
    found, count = np.unique(np.round(values, 4), return_counts=True)
    return float(found[count.argmax()]), int(count.max())


def invulnerable_hurtbox(data: FrameData) -> torch.Tensor:
    """(actions,) the hurtbox state (1 invulnerable, 2 intangible) the training games' players most
    often have on the first frame of an invulnerability that starts in each action; elsewhere the
    most common starting state of all (the last state where the games have none, as
    ``FrameStackMLP`` starts)."""
    spec = data.spec
    starts = []
    for _, _, ints in data.game_rows("train"):
        for p in range(NUM_PLAYERS):
            hurtbox = np.asarray(ints[:, spec.int_col(p, "hurtbox")], dtype=np.int64)
            action = np.asarray(ints[:, spec.int_col(p, "action")], dtype=np.int64)
            rows = np.flatnonzero((hurtbox[:-1] == 0) & (hurtbox[1:] != 0)) + 1
            starts.append(np.stack([action[rows], hurtbox[rows]], axis=1))
    pairs = np.concatenate(starts) if starts else np.zeros((0, 2), dtype=np.int64)
    states = spec.vocab("hurtbox")
    overall = np.bincount(pairs[:, 1], minlength=states).argmax() if len(pairs) else states - 1
    counts = np.zeros((spec.vocab("action"), states), dtype=np.int64)
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    return torch.from_numpy(np.where(counts.any(1), counts.argmax(1), overall))


def hit_tables(
    data: FrameData, size: int, min_hits: int = 3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the training games' hits land: each ``models.mlp.hit_cell`` after which, on the next
    frame, the defender's percent rises with the attacker's last attack landed set, at least
    ``min_hits`` times and on more than half of the cell's frames. Returns the cells (sorted; the
    ``size`` with the most hits), the move each cell's hits most often record and their most
    common damage (in percent)."""
    spec = data.spec
    cells, hit, move, damage = [], [], [], []
    for _, floats, ints in data.game_rows("train"):
        floats, ints = torch.from_numpy(np.asarray(floats)), torch.from_numpy(np.asarray(ints)).long()
        for p in range(NUM_PLAYERS):
            landed = ints[1:, spec.int_col(p, "last_attack_landed")]
            # Whole percents, stored x 0.01 in float32: rounded back, not truncated.
            percent = torch.round(
                floats[:, spec.float_col(1 - p, "percent")].double() / spec.scale("percent")
            )
            cells.append(hit_cell(floats[:-1], ints[:-1], spec, p))
            hit.append((percent[1:] > percent[:-1]) & (landed != 0))
            move.append(landed)
            damage.append(percent[1:] - percent[:-1])
    if not cells:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0)
    cell, hit, move, damage = (torch.cat(part).numpy() for part in (cells, hit, move, damage))
    found, where, frames = np.unique(cell, return_inverse=True, return_counts=True)
    hits = np.bincount(where, weights=hit, minlength=len(found))
    decided = np.flatnonzero((hits >= min_hits) & (hits > frames / 2))
    decided = np.sort(decided[np.argsort(-hits[decided], kind="stable")[:size]])
    # Each decided cell's hits, grouped in one sort.
    rows = np.flatnonzero(hit & np.isin(where, decided))
    rows = rows[np.argsort(where[rows], kind="stable")]
    groups = np.split(rows, np.flatnonzero(np.diff(where[rows])) + 1)
    return (
        torch.from_numpy(found[decided]),
        torch.tensor([np.bincount(move[group]).argmax() for group in groups], dtype=torch.long),
        torch.tensor([modal(damage[group])[0] for group in groups], dtype=torch.float32),
    )


def action_tables(
    data: FrameData, size: int, min_frames: int, agreement: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the training games' next action is known: each ``models.mlp.transition_cell`` (per
    character and shared by every character) whose player-frames, at least ``min_frames`` of them,
    take one next action (their own included) on at least ``agreement`` (more than half) of them.
    Returns the cells (sorted; the ``size`` with the most frames), that action, and per action the
    state_age its first frames most often have (0 where the games start none, or without
    ``state_age_as_embed``)."""
    spec = data.spec
    actions = spec.vocab("action")
    controls = [[spec.float_col(p, name) for name in CONTROLLER_FIELDS] for p in range(NUM_PLAYERS)]
    ages = "state_age" in spec.categorical_fields
    cells, nexts = [], []
    first_ages = np.zeros((actions, spec.vocab("state_age") if ages else 1), dtype=np.int64)
    for _, floats, ints in data.game_rows("train"):
        floats, ints = torch.from_numpy(np.asarray(floats)), torch.from_numpy(np.asarray(ints)).long()
        for p in range(NUM_PLAYERS):
            ctrl = floats[:, controls[p]]
            action = ints[:, spec.int_col(p, "action")]
            cells += transition_cell(floats[:-1], ints[:-1], ctrl[:-1], ctrl[1:], spec, p)
            nexts += [action[1:]] * 2
            if ages:
                rows = torch.nonzero(action[1:] != action[:-1]).flatten() + 1
                starts = (action[rows].numpy(), ints[rows, spec.int_col(p, "state_age")].numpy())
                np.add.at(first_ages, starts, 1)
    first_state_age = torch.from_numpy(first_ages.argmax(1))
    if not cells:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), first_state_age
    cell, following = torch.cat(cells).numpy(), torch.cat(nexts).numpy()
    found, where, frames = np.unique(cell, return_inverse=True, return_counts=True)
    pairs, pair_frames = np.unique(where * actions + following, return_counts=True)
    # With agreement above a half, at most one next action per cell qualifies.
    pair_cell = pairs // actions
    qualifies = (frames[pair_cell] >= min_frames) & (pair_frames >= agreement * frames[pair_cell])
    decided, next_action = pair_cell[qualifies], pairs[qualifies] % actions
    keep = np.sort(np.argsort(-frames[decided], kind="stable")[:size])
    return torch.from_numpy(found[decided[keep]]), torch.from_numpy(next_action[keep]), first_state_age


def respawn_tables(
    data: FrameData, layout: HeadLayout, min_frames: int = 3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Melee's death and respawn sequence as the training games play it.

    ``next_action`` (death/respawn actions, action_age vocab): the action that follows (action,
    action_age) on more than half of at least ``min_frames`` player-frames, where it is another
    action; -1 elsewhere. ``values`` and ``known`` (stages, continuous slots): each predicted
    continuous field's value on the frame a dead player respawns, where more than half of that
    stage's respawns (at least two) of that player slot agree on it; on other stages, where more
    than half of all respawns of the slot agree, except x and y (the respawn point is the
    stage's)."""
    spec = data.spec
    sequence, ages, stages = len(DEATH_OR_RESPAWN_ACTIONS), spec.vocab("action_age"), spec.vocab("stage")
    slots = np.array(layout.continuous_cols)
    owner = slots // spec.float_per_player
    transitions, events = [], []
    for _, floats, ints in data.game_rows("train"):
        stage = int(ints[0, spec.stage_col])
        for p in range(NUM_PLAYERS):
            action = np.asarray(ints[:, spec.int_col(p, "action")], dtype=np.int64)
            age = np.asarray(ints[:-1, spec.int_col(p, "action_age")], dtype=np.int64)
            before, after = action[:-1], action[1:]
            timed = before < sequence
            transitions.append((before[timed] * ages + age[timed]) * spec.vocab("action") + after[timed])
            respawn = np.flatnonzero(np.isin(before, DEATH_ACTIONS) & (after == REBIRTH_ACTION)) + 1
            for row in respawn:
                events.append((stage, p, np.asarray(floats[row, slots])))

    key = np.concatenate(transitions) if transitions else np.zeros(0, dtype=np.int64)
    counts = np.bincount(key, minlength=sequence * ages * spec.vocab("action")).reshape(sequence, ages, -1)
    seen, best = counts.sum(2), counts.argmax(2)
    decided = (
        (counts.max(2) >= min_frames) & (counts.max(2) > seen / 2) & (best != np.arange(sequence)[:, None])
    )
    next_action = np.where(decided, best, -1)

    values = np.zeros((stages, len(slots)), dtype=np.float32)
    known = np.zeros((stages, len(slots)), dtype=bool)

    def agreed(rows: list[np.ndarray], least: int) -> tuple[np.ndarray, np.ndarray]:
        """Per slot the most common value among ``rows`` and whether more than half of them hold it."""
        if len(rows) < least:
            return np.zeros(len(slots), dtype=np.float32), np.zeros(len(slots), dtype=bool)
        stacked = np.stack(rows)
        mode, share = [], []
        for column in stacked.T:
            found, count = np.unique(np.round(column, 4), return_counts=True)
            mode.append(column[np.round(column, 4) == found[count.argmax()]][0])
            share.append(count.max() / len(column))
        return np.array(mode, dtype=np.float32), np.array(share) > 0.5

    anywhere = np.ones(len(slots), dtype=bool)
    anywhere[layout.position_slots] = False
    for p in range(NUM_PLAYERS):
        mine = owner == p
        everywhere, everywhere_known = agreed([row for _, q, row in events if q == p], 1)
        everywhere_known &= anywhere
        for stage in range(stages):
            here, here_known = agreed([row for s, q, row in events if s == stage and q == p], 2)
            values[stage, mine] = np.where(here_known, here, everywhere)[mine]
            known[stage, mine] = (here_known | everywhere_known)[mine]
    return torch.from_numpy(next_action), torch.from_numpy(values), torch.from_numpy(known)


def blast_zones(data: FrameData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where and how the training games' players die.

    ``bounds`` and ``known`` (stages, sides; ``BLAST_SIDES``): per stage the furthest x (left,
    right) or y (bottom, top) an alive player reached, known where a player died through that
    side. ``side_action`` (sides,): the DEAD_* action most deaths through the side start with, -1
    where none did; ``side_stock`` (sides,): whether most of them lose the stock on that first
    frame (a star KO loses it later)."""
    spec = data.spec
    stages, sides = spec.vocab("stage"), len(BLAST_SIDES)
    far = np.full((stages, sides), np.nan)
    died = np.zeros((stages, sides), dtype=bool)
    entries = []
    for _, floats, ints in data.game_rows("train"):
        stage = int(ints[0, spec.stage_col])
        for p in range(NUM_PLAYERS):
            action = np.asarray(ints[:, spec.int_col(p, "action")], dtype=np.int64)
            x, y = (np.asarray(floats[:, spec.float_col(p, axis)], dtype=np.float64) for axis in "xy")
            stocks = np.asarray(floats[:, spec.float_col(p, "stocks")], dtype=np.float64)
            alive = action >= DEATH_OR_RESPAWN_ACTIONS.stop
            if alive.any():
                reached = (x[alive].min(), x[alive].max(), y[alive].min(), y[alive].max())
                extreme = (np.fmin, np.fmax, np.fmin, np.fmax)
                far[stage] = [pick(far[stage, i], reached[i]) for i, pick in enumerate(extreme)]
            for row in np.flatnonzero(alive[:-1] & np.isin(action[1:], DEATH_ACTIONS)) + 1:
                side = DEATH_SIDE[action[row]]
                died[stage, side] = True
                entries.append((side, action[row], stocks[row] < stocks[row - 1]))

    side_action = np.full(sides, -1, dtype=np.int64)
    side_stock = np.zeros(sides, dtype=bool)
    for side in range(sides):
        through = [(act, lost) for s, act, lost in entries if s == side]
        if through:
            actions, counts = np.unique([act for act, _ in through], return_counts=True)
            side_action[side] = actions[counts.argmax()]
            side_stock[side] = np.mean([lost for _, lost in through]) > 0.5
    known = died & ~np.isnan(far)
    return (
        torch.from_numpy(np.nan_to_num(far).astype(np.float32)),
        torch.from_numpy(known),
        torch.from_numpy(side_action),
        torch.from_numpy(side_stock),
    )


def recorded_players(
    data: FrameData, velocity: str
) -> Iterator[tuple[Callable, np.ndarray, np.ndarray, np.ndarray]]:
    """Each player of each training game that records ``velocity`` (a game that predates it has
    it 0 throughout): a reader of that player's float columns (float64), the velocity in game
    units per frame, and its action and character columns."""
    spec = data.spec
    for _, floats, ints in data.game_rows("train"):
        for p in range(NUM_PLAYERS):

            def column(name: str, p: int = p, floats: np.ndarray = floats) -> np.ndarray:
                return np.asarray(floats[:, spec.float_col(p, name)], dtype=np.float64)

            speed = column(velocity) / spec.scale(velocity)
            if speed.any():
                yield (
                    column,
                    speed,
                    np.asarray(ints[:, spec.int_col(p, "action")], dtype=np.int64),
                    np.asarray(ints[:, spec.int_col(p, "character")], dtype=np.int64),
                )


def air_physics(
    data: FrameData, min_frames: int = 50, min_held: int = 10, min_take_offs: int = 3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each character's vertical speeds in the air, as the training games play them.

    ``fall_speeds`` (characters, 2): the fall speed and the fast-fall speed in game units per
    frame, the two speeds players most often hold from one frame to the next in ``FALL_ACTIONS``
    outside hitlag (the faster is the fast fall; where the second is held on fewer than
    ``min_held`` frames, or missing, the character has no fast fall in the games and both are the
    fall speed). Known (``fall_known``) where at least ``min_frames`` such frames hold a speed.
    ``take_offs`` (characters, jump actions, 2): the vertical speed on the first frame of each of
    ``JUMP_ACTIONS`` with no jump button (X, Y) held and with one held (a short hop lets go of it
    during the jump squat), known (``take_off_known``) where at least ``min_take_offs`` take-offs
    agree on more than half. Games that predate the velocities (every vertical speed 0) are
    skipped."""
    spec = data.spec
    characters, jumps = spec.vocab("character"), len(JUMP_ACTIONS)
    held_speeds: dict[int, list[np.ndarray]] = {}
    take_off_speeds: dict[tuple[int, int, int], list[float]] = {}
    for column, speed, action, character in recorded_players(data, "self_y"):
        airborne, calm = column("on_ground") < 0.5, column("hitlag") <= 0
        held = (column("X") > 0.5) | (column("Y") > 0.5)
        falling = np.isin(action, FALL_ACTIONS) & airborne & calm
        kept = falling[:-1] & falling[1:] & (np.round(speed[1:] - speed[:-1], 4) == 0) & (speed[1:] < 0)
        for c in np.unique(character[:-1][kept]):
            held_speeds.setdefault(int(c), []).append(speed[1:][kept & (character[:-1] == c)])
        starts = (
            np.flatnonzero(
                (action[1:] != action[:-1]) & np.isin(action[1:], JUMP_ACTIONS) & airborne[1:] & calm[1:]
            )
            + 1
        )
        for row in starts:
            key = (int(character[row]), int(action[row] - JUMP_ACTIONS.start), int(held[row]))
            take_off_speeds.setdefault(key, []).append(float(speed[row]))

    fall_speeds = np.zeros((characters, 2), dtype=np.float32)
    fall_known = np.zeros(characters, dtype=bool)
    for c, parts in held_speeds.items():
        speeds = np.concatenate(parts)
        if len(speeds) < min_frames:
            continue
        found, count = np.unique(np.round(speeds, 4), return_counts=True)
        order = np.argsort(-count)
        top = found[order[:2]][count[order[:2]] >= min_held]
        if len(top):
            fall_speeds[c] = (-top.max(), -top.min())  # the slower is the fall, the faster the fast fall
            fall_known[c] = True
    take_offs = np.zeros((characters, jumps, 2), dtype=np.float32)
    take_off_known = np.zeros((characters, jumps, 2), dtype=bool)
    for (c, jump, held), speeds in take_off_speeds.items():
        value, count = modal(np.array(speeds))
        take_offs[c, jump, held] = value
        take_off_known[c, jump, held] = len(speeds) >= min_take_offs and count > len(speeds) / 2
    return (
        torch.from_numpy(fall_speeds),
        torch.from_numpy(fall_known),
        torch.from_numpy(take_offs),
        torch.from_numpy(take_off_known),
    )


def air_drift(
    data: FrameData, min_frames: int = 500, min_exact: float = 0.9
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each character's horizontal air drift, as the training games play it: ``drift``
    (characters, ``DRIFT_CONSTANTS``) and ``known`` (characters,). Over the frames a player stays
    airborne outside hitlag in a jump, fall or aerial (``FREE_FALL_ACTIONS``), per character with
    at least ``min_frames`` of them: the friction is the most common slowdown with the main stick
    in the deadzone, the top speed the most common speed held with the stick fully pushed, and
    the acceleration the least-squares fit of the speed's change on the stick (and its side) where
    the speed moves toward the stick without reaching the target. Known where ``air_drift_speed``
    then gives the next speed within 0.002 units on at least ``min_exact`` of the frames. Games
    that predate the velocities (every air speed 0) are skipped."""
    spec = data.spec
    rows: dict[int, list[np.ndarray]] = {}
    for column, speed, action, character in recorded_players(data, "self_x_air"):
        drifting = np.isin(action, FREE_FALL_ACTIONS) & (column("on_ground") < 0.5) & (column("hitlag") <= 0)
        # A jump's first frame sets the jump's own horizontal speed, not the drift's.
        new_jump = (action[1:] != action[:-1]) & np.isin(action[1:], JUMP_ACTIONS)
        kept = drifting[:-1] & drifting[1:] & ~new_jump
        stick = 2 * column("main_x")[1:] - 1
        frames = np.stack([speed[:-1], speed[1:], stick], axis=1)[kept]
        for c in np.unique(character[:-1][kept]):
            rows.setdefault(int(c), []).append(frames[character[:-1][kept] == c])
    drift = np.zeros((spec.vocab("character"), len(DRIFT_CONSTANTS)), dtype=np.float32)
    known = np.zeros(spec.vocab("character"), dtype=bool)
    for c, parts in rows.items():
        last, after, stick = np.concatenate(parts).T
        if len(last) < min_frames:
            continue
        centred = np.abs(stick) < STICK_DEADZONE
        slowing = centred & (np.abs(after) > 1e-4) & (np.abs(after) < np.abs(last))
        pushed = (np.abs(stick) >= 0.99) & (np.round(after - last, 4) == 0) & (np.abs(after) > 0.1)
        if not slowing.any() or not pushed.any():
            continue
        friction = modal(np.abs(last[slowing]) - np.abs(after[slowing]))[0]
        top_speed = modal(np.abs(after[pushed]))[0]
        moving = (
            ~centred
            & (np.sign(after - last) == np.sign(stick))
            & (np.abs(after) < np.abs(stick) * top_speed - 1e-3)
            & (np.abs(after - last) > 1e-4)
        )
        if moving.sum() < 2:
            continue
        per_stick, base = np.linalg.lstsq(
            np.stack([stick[moving], np.sign(stick[moving])], axis=1), (after - last)[moving], rcond=None
        )[0]
        drift[c] = (friction, top_speed, per_stick, base)
        constants = torch.from_numpy(drift[c]).double().expand(len(last), -1)
        rule = air_drift_speed(torch.from_numpy(last), torch.from_numpy(stick), constants).numpy()
        known[c] = np.mean(np.abs(rule - after) < 2e-3) >= min_exact
    return torch.from_numpy(drift), torch.from_numpy(known)


def ground_friction(
    data: FrameData, min_frames: int = 30, min_moving: int = 10, min_exact: float = 0.97
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where Melee's ground friction alone moves a player, as the training games play it:
    ``friction`` (characters,), each character's most common slowdown of the ground speed
    (self_x_ground) from one frame to the next, over the frames it stays grounded, outside hitlag
    and in the same action; ``sliding`` (characters, actions), True where at least ``min_frames``
    such frames (``min_moving`` of them moving) take the friction's next speed (the speed slowed
    by it, down to 0) within 0.002 units on at least ``min_exact`` of them. Games that predate the
    velocities (every ground speed 0) are skipped."""
    spec = data.spec
    characters, actions = spec.vocab("character"), spec.vocab("action")
    parts = []
    for column, speed, action, character in recorded_players(data, "self_x_ground"):
        steady = (column("on_ground") > 0.5) & (column("hitlag") <= 0)
        kept = steady[:-1] & steady[1:] & (action[:-1] == action[1:])
        parts.append(np.stack([character[:-1], action[:-1], speed[:-1], speed[1:]], axis=1)[kept])
    friction = np.zeros(characters, dtype=np.float32)
    sliding = np.zeros((characters, actions), dtype=bool)
    if not parts:
        return torch.from_numpy(friction), torch.from_numpy(sliding)
    character, action, last, after = np.concatenate(parts).T
    character, action = character.astype(np.int64), action.astype(np.int64)
    slowing = (np.abs(after) > 1e-4) & (np.abs(after) < np.abs(last)) & (np.sign(after) == np.sign(last))
    for c in np.unique(character[slowing]):
        friction[c] = modal((np.abs(last) - np.abs(after))[slowing & (character == c)])[0]
    slowed = np.sign(last) * np.maximum(np.abs(last) - friction[character], 0)
    cell = character * actions + action
    frames = np.bincount(cell, minlength=characters * actions)
    moving = np.bincount(cell, weights=np.abs(last) > 1e-4, minlength=characters * actions)
    exact = np.bincount(cell, weights=np.abs(slowed - after) < 2e-3, minlength=characters * actions)
    held = (frames >= min_frames) & (moving >= min_moving) & (exact >= min_exact * frames)
    sliding[:] = held.reshape(characters, actions) & (friction > 0)[:, None]
    return torch.from_numpy(friction), torch.from_numpy(sliding)


def ecb_landings(
    data: FrameData,
    surfaces: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    min_landings: int = 10,
    min_crossings: int = 3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where Melee lands a falling player, as the training games play it.

    Melee lands a player when the bottom of its environment collision box (ECB), which in the air
    sits some way above the player's position, crosses a surface; until then the position sinks
    below the surface's line. Each landing of a player in a jump, fall or aerial action
    (``FREE_FALL_ACTIONS``) on one of the stage ``surfaces``, at the end of a descent onto its line
    (airborne, sinking, from above it), bounds that depth: deeper than the last airborne frame's
    depth, no deeper than that plus its last fall. ``landing_depth`` (characters, actions), in
    game units: per character and action, the depth within the most landings' bounds, known
    (``landing_known``) where at least ``min_landings`` landings show it; the character's other
    free-fall actions take its depth over all of them. ``passable`` (stages, grounds): the
    surfaces that players whose ECB crosses them with the main stick held down (below
    -FAST_FALL_STICK) fall through on most of at least ``min_crossings`` frames, the platforms.
    ``landing_action`` (actions,): the action most of at least ``min_landings`` landings from each
    action start (a fall's Landing, an aerial's landing lag), -1 where none is. Games that predate
    ground ids are skipped (a landing's surface is unknown there)."""
    spec = data.spec
    line, extent, known = (part.numpy().astype(np.float64) for part in surfaces)
    known = known.astype(bool)
    characters, actions = spec.vocab("character"), spec.vocab("action")
    y_scale = spec.scale("y")
    free_fall = np.zeros(actions, dtype=bool)
    free_fall[[a for a in FREE_FALL_ACTIONS if a < actions]] = True
    # Per frame of a descent: character, action, stage, surface, depth, the next frame's depth
    # (had it not landed), landed, the stick held down.
    samples: list[np.ndarray] = []
    for _, floats, ints in data.game_rows("train"):
        stage = np.asarray(ints[:, spec.stage_col], dtype=np.int64)
        for p in range(NUM_PLAYERS):
            ground = np.asarray(ints[:, spec.int_col(p, "ground")], dtype=np.int64)
            if not ground.any():
                continue
            x, y = (np.asarray(floats[:, spec.float_col(p, axis)], dtype=np.float64) for axis in "xy")
            on_ground = np.asarray(floats[:, spec.float_col(p, "on_ground")]) > 0.5
            stick = 2 * np.asarray(floats[:, spec.float_col(p, "main_y")], dtype=np.float64) - 1
            action = np.asarray(ints[:, spec.int_col(p, "action")], dtype=np.int64).clip(0, actions - 1)
            character = np.asarray(ints[:, spec.int_col(p, "character")], dtype=np.int64)
            frames = np.arange(len(x))
            for surface in np.flatnonzero(known.any(0)):
                depth = (line[stage, surface, 0] + line[stage, surface, 1] * x - y) / y_scale
                under = (
                    known[stage, surface]
                    & (extent[stage, surface, 0] <= x)
                    & (x <= extent[stage, surface, 1])
                )
                sinking = np.r_[False, depth[1:] >= depth[:-1]]
                broken = on_ground | ~under | ~sinking
                last_above = np.maximum.accumulate(np.where(depth <= 0, frames, -1))
                last_break = np.maximum.accumulate(np.where(broken & (depth > 0), frames, -1))
                descending = (depth <= 0) | (last_above > last_break)
                t = (
                    np.flatnonzero(
                        descending[1:-1] & under[1:-1] & ~on_ground[1:-1] & free_fall[action[1:-1]]
                    )
                    + 1
                )
                landed = on_ground[t + 1] & (ground[t + 1] == surface)
                # Still over the surface, or landed on it: a player who drifted off its edge
                # neither landed nor fell through.
                kept = landed | (~on_ground[t + 1] & under[t + 1])
                t, landed = t[kept], landed[kept]
                # The landing frame's fall, had it not landed, taken as the last frame's: a little
                # short while the fall still speeds up.
                fallen = depth[t] + np.maximum(y[t - 1] - y[t], 0) / y_scale
                columns = [character[t], action[t], stage[t], np.full(len(t), surface), depth[t]]
                columns += [np.where(landed, fallen, depth[t + 1]), landed, stick[t + 1] < -FAST_FALL_STICK]
                samples.append(np.stack([*columns, action[t + 1]], 1))
    rows = np.concatenate(samples) if samples else np.zeros((0, 9))
    character, action, stage_id, surface = (rows[:, i].astype(np.int64) for i in range(4))
    depth, reached, landed, down = rows[:, 4], rows[:, 5], rows[:, 6] > 0.5, rows[:, 7] > 0.5
    landing_depth = np.zeros((characters, actions), dtype=np.float32)
    landing_known = np.zeros((characters, actions), dtype=bool)
    landing = landed & ~down
    for c in np.unique(character[landing]):
        mine = landing & (character == c)
        if mine.sum() < min_landings:
            continue
        landing_depth[c] = most_agreed_depth(depth[mine], reached[mine])
        landing_known[c] = free_fall
        for a in np.unique(action[mine]):
            ours = mine & (action == a)
            if ours.sum() >= min_landings:
                landing_depth[c, a] = most_agreed_depth(depth[ours], reached[ours])
    reach = landing_depth[character, action]
    crossing = down & landing_known[character, action] & (depth < reach) & (reach <= reached)
    passed = np.zeros(known.shape, dtype=np.int64)
    landed_on = np.zeros(known.shape, dtype=np.int64)
    np.add.at(passed, (stage_id[crossing & ~landed], surface[crossing & ~landed]), 1)
    np.add.at(landed_on, (stage_id[crossing & landed], surface[crossing & landed]), 1)
    passable = (passed + landed_on >= min_crossings) & (passed > landed_on)
    landing_action = np.full(actions, -1, dtype=np.int64)
    for a in np.unique(action[landing]):
        value, count = modal(rows[landing & (action == a), 8])
        if (landing & (action == a)).sum() >= min_landings and count > (landing & (action == a)).sum() / 2:
            landing_action[a] = int(value)
    return (
        torch.from_numpy(landing_depth),
        torch.from_numpy(landing_known),
        torch.from_numpy(passable),
        torch.from_numpy(landing_action),
    )


def most_agreed_depth(above: np.ndarray, reached: np.ndarray) -> float:
    """The depth (>= 0) inside the most of the bounds (``above``, ``reached``]: the middle of
    the stretch those bounds share, the first such stretch on ties. Empty bounds are left out."""
    low, high = np.maximum(above, 0), np.maximum(reached, 0)
    low, high = low[high > low], high[high > low]
    if not len(low):
        return 0.0
    # The most-covered depths include a bound's upper end: try each, counting the bounds
    # a < depth <= r that hold it.
    ends = np.sort(high)
    held = np.searchsorted(np.sort(low), ends, side="left") - np.searchsorted(ends, ends, side="left")
    depth = ends[int(np.argmax(held))]
    holding = (low < depth) & (depth <= high)
    return float((low[holding].max() + high[holding].min()) / 2)


def stage_surfaces(
    data: FrameData, max_rows: int = 2_000_000, min_frames: int = 50, tolerance: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The surfaces grounded characters stand on in the training games, per (stage, ground id):
    the line y = a + b*x through their frames (least squares, refitted on the frames near it), in
    encoded units (stage_vocab, ground_vocab, 2), its x
    extent (same shape) and whether it is known: seen on at least ``min_frames`` grounded
    player-frames, 95% of them within ``tolerance`` game units of the line. A moving platform
    (Fountain of Dreams' sides) or a clamped out-of-vocabulary ground id fits no line and stays
    unknown; so does every surface of a replay too old to record ground ids (ground 0 there)."""
    spec = data.spec
    shape = (spec.vocab("stage"), spec.vocab("ground"))
    line, extent, known = np.zeros((*shape, 2)), np.zeros((*shape, 2)), np.zeros(shape, dtype=bool)
    keys, xs, ys = [], [], []
    rows = 0
    for game, floats, ints in data.game_rows("train"):
        if rows >= max_rows:
            break
        stage = np.asarray(ints[:, spec.stage_col], dtype=np.int64)
        for p in range(NUM_PLAYERS):
            ground = np.asarray(ints[:, spec.int_col(p, "ground")], dtype=np.int64)
            grounded = (ground > 0) & (np.asarray(floats[:, spec.float_col(p, "on_ground")]) > 0.5)
            keys.append((stage * shape[1] + ground)[grounded])
            xs.append(np.asarray(floats[grounded, spec.float_col(p, "x")], dtype=np.float64))
            ys.append(np.asarray(floats[grounded, spec.float_col(p, "y")], dtype=np.float64))
        rows += game.num_frames
    if keys:
        key, x, y = np.concatenate(keys), np.concatenate(xs), np.concatenate(ys)
        limit = tolerance * spec.scale("y")
        for surface in np.unique(key):
            on = key == surface
            if on.sum() < min_frames:
                continue
            design = np.stack([np.ones(on.sum()), x[on]], axis=1)
            inliers = np.ones(on.sum(), dtype=bool)
            # Refit on the frames near the line: the few grounded frames of a ledge or respawn
            # action far off it would otherwise tilt and lift it off the exact surface height.
            for _ in range(3):
                coef = np.linalg.lstsq(design[inliers], y[on][inliers], rcond=None)[0]
                off = np.abs(y[on] - design @ coef)
                inliers = off <= limit
                if inliers.sum() < 2:
                    break
            if np.quantile(off, 0.95) > limit:
                continue
            index = divmod(int(surface), shape[1])
            line[index], known[index] = coef, True
            # Quantiles, not the extremes: a few frames of a ledge or teeter action sit past the edge.
            extent[index] = np.quantile(x[on][inliers], [0.005, 0.995])
    return (
        torch.tensor(line, dtype=torch.float32),
        torch.tensor(extent, dtype=torch.float32),
        torch.tensor(known),
    )


def surface_spans(
    data: FrameData, surfaces: tuple[torch.Tensor, torch.Tensor, torch.Tensor], tolerance: float = 0.1
) -> torch.Tensor:
    """(stage_vocab, ground_vocab, 2) encoded x: the leftmost and rightmost x at which players of
    the training games stood on each known surface of ``surfaces`` (grounded, with its ground id,
    within ``tolerance`` game units of its line); the surface's extent where none did. Where two
    segments of a floor meet, the extents (quantiles) leave a gap the spans close."""
    spec = data.spec
    line, known = surfaces[0].double().numpy(), surfaces[2].numpy()
    spans = surfaces[1].double().numpy().copy()
    left, right = np.full(known.shape, np.inf), np.full(known.shape, -np.inf)
    limit = tolerance * spec.scale("y")
    for _, floats, ints in data.game_rows("train"):
        stage = np.asarray(ints[:, spec.stage_col], dtype=np.int64)
        for p in range(NUM_PLAYERS):
            ground = np.asarray(ints[:, spec.int_col(p, "ground")], dtype=np.int64)
            x, y = (np.asarray(floats[:, spec.float_col(p, axis)], dtype=np.float64) for axis in "xy")
            grounded = (np.asarray(floats[:, spec.float_col(p, "on_ground")]) > 0.5) & known[stage, ground]
            a, b = line[stage, ground].T
            on = grounded & (np.abs(a + b * x - y) <= limit)
            np.minimum.at(left, (stage[on], ground[on]), x[on])
            np.maximum.at(right, (stage[on], ground[on]), x[on])
    seen = np.isfinite(left)
    spans[..., 0] = np.where(seen, np.minimum(left, spans[..., 0]), spans[..., 0])
    spans[..., 1] = np.where(seen, np.maximum(right, spans[..., 1]), spans[..., 1])
    return torch.tensor(spans, dtype=torch.float32)


def window_augment(spec: EncodingSpec, cfg: TrainConfig, surfaces) -> WindowAugment | None:
    """``train.augment`` as a ``WindowAugment`` (None when off); mirroring pairs the ground ids of
    the stages' measured ``surfaces``."""
    if not cfg.augment:
        return None
    ground_mirror = mirrored_grounds(*surfaces, spec) if "mirror" in cfg.augment else None
    return WindowAugment(spec, cfg.augment, seed=cfg.seed, ground_mirror=ground_mirror)


def persistence_rates(data: FrameData, layout: HeadLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """How often each binary and each predicted categorical repeats from one frame to the next in
    the training games."""
    int_cols = [layout.categorical_col(player, name) for _, player, name, _ in layout.logit_heads]
    same_binary = np.zeros(len(layout.binary_cols))
    same_int = np.zeros(len(int_cols))
    pairs = 0
    for game, floats, ints in data.game_rows("train"):
        if game.num_frames < 2:
            continue
        binary = np.asarray(floats[:, layout.binary_cols])
        cats = np.asarray(ints[:, int_cols])
        same_binary += (binary[1:] == binary[:-1]).sum(0)
        same_int += (cats[1:] == cats[:-1]).sum(0)
        pairs += game.num_frames - 1
    pairs = max(pairs, 1)
    return torch.tensor(same_binary / pairs, dtype=torch.float32), torch.tensor(
        same_int / pairs, dtype=torch.float32
    )


def train_run(
    experiment: ExperimentConfig,
    root,
    *,
    dagster_run_id: str | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
    loss_fn: LossFn | None = None,
    make_metrics: Callable[[], Any] | None = None,
    **overrides: Any,
) -> RunResult:
    """Train ``experiment`` on the eligible games under ``root`` and write a run folder."""
    # 1. Resolve the config and the device.
    experiment = apply_overrides(experiment, overrides)
    cfg = experiment.train
    if cfg.rollout_steps > 1 and loss_fn is not None:
        raise ValueError(
            f"{experiment.name}: train.rollout_steps={cfg.rollout_steps} needs a world model "
            "(its predictions are fed back as frames); use 1 for this model"
        )
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    spec = EncodingSpec(experiment.encoding)
    layout = head_layout(spec, experiment.model.heads)

    # 2. Data: encode what is missing, open the shards, build batch iterables.
    folder = ensure_shards(experiment, root, progress=progress)
    data = FrameData.from_shards(
        folder, spec, mmap=cfg.loader == "memmap", max_games=cfg.max_games, train_percent=cfg.train_percent
    )
    train_md5s, val_md5s = data.md5s("train"), data.md5s("val")
    if not train_md5s or not val_md5s:
        raise ValueError(
            f"{folder}: {len(train_md5s)} training and {len(val_md5s)} validation games with "
            f"train_percent={cfg.train_percent}; both splits need a game (add games or change train.train_percent)"
        )
    batch_args = dict(mode=cfg.loader, context_len=experiment.model.context_len, device=device, seed=cfg.seed)
    # Measured for a fresh model's surfaces (a resumed one has them in its weights) and for mirroring.
    needs_surfaces = (experiment.model.stage_surfaces and not resume) or "mirror" in cfg.augment
    surfaces = stage_surfaces(data) if needs_surfaces else None
    augment = window_augment(spec, cfg, surfaces)
    train_batches = make_batches(
        data,
        "train",
        batch_size=cfg.batch_size,
        shuffle=True,
        max_batches=cfg.max_train_batches,
        horizon=cfg.rollout_steps,
        augment=augment,
        **batch_args,
    )
    val_batches = make_batches(
        data,
        "val",
        batch_size=cfg.val_batch_size or cfg.batch_size,
        shuffle=False,
        max_batches=cfg.max_val_batches,
        **batch_args,
    )
    std = (
        typical_deltas(data, layout, cfg.continuous_loss).to(device) if cfg.continuous_loss != "mse" else None
    )

    # 3. Model and optimizer, fresh or resumed.
    model = build_model(experiment.encoding, experiment.model).to(device)
    optimizer = make_optimizer(model, cfg, device)
    start_epoch = start_step = 0
    all_epochs: list[dict[str, Any]] = []
    if resume:
        loaded = load_checkpoint(resume, device)
        if loaded.experiment.model != experiment.model or loaded.experiment.encoding != experiment.encoding:
            raise ValueError(
                f"{resume}: its model or encoding config differs from experiment {experiment.name!r}"
            )
        model.load_state_dict(loaded.state["model_state"])
        optimizer.load_state_dict(loaded.state["optimizer_state"])
        start_epoch, start_step = loaded.epoch, loaded.step
        run_dir = Path(resume).parent
        previous = run_dir / "manifest.json"
        if previous.is_file():
            all_epochs = [
                e for e in json.loads(previous.read_text())["all_epochs"] if e["epoch"] <= start_epoch
            ]
        run_id = run_dir.name
    else:
        if experiment.model.persistence_prior and hasattr(model, "calibrate_persistence"):
            model.calibrate_persistence(*(rate.to(device) for rate in persistence_rates(data, layout)))
        if experiment.model.normalized_dynamics and hasattr(model, "calibrate_dynamics"):
            mean, spread = float_statistics(data)
            units = (
                std
                if cfg.continuous_loss == "huber_normalized"
                else typical_deltas(data, layout, "huber_normalized").to(device)
            )
            model.calibrate_dynamics(mean.to(device), spread.to(device), units)
        if experiment.model.stage_surfaces and hasattr(model, "calibrate_surfaces"):
            model.calibrate_surfaces(*(part.to(device) for part in surfaces))
        if experiment.model.binary_flip_tables and hasattr(model, "calibrate_flip_tables"):
            tables = binary_flip_tables(data, model.flips_on_stay.shape[2])
            model.calibrate_flip_tables(*(table.to(device) for table in tables))
        if experiment.model.hurtbox_from_invulnerable and hasattr(model, "calibrate_invulnerable_hurtbox"):
            model.calibrate_invulnerable_hurtbox(invulnerable_hurtbox(data).to(device))
        if experiment.model.hit_tables and hasattr(model, "calibrate_hit_tables"):
            tables = hit_tables(data, experiment.model.hit_table_size)
            model.calibrate_hit_tables(*(table.to(device) for table in tables))
        if experiment.model.action_tables and hasattr(model, "calibrate_action_tables"):
            cfg_model = experiment.model
            tables = action_tables(
                data,
                cfg_model.action_table_size,
                cfg_model.action_table_min_frames,
                cfg_model.action_table_agreement,
            )
            model.calibrate_action_tables(*(table.to(device) for table in tables))
        if experiment.model.respawn_sequence and hasattr(model, "calibrate_respawn"):
            model.calibrate_respawn(*(table.to(device) for table in respawn_tables(data, layout)))
        if experiment.model.blast_zones and hasattr(model, "calibrate_blast_zones"):
            model.calibrate_blast_zones(*(table.to(device) for table in blast_zones(data)))
        if experiment.model.air_physics and hasattr(model, "calibrate_air_physics"):
            model.calibrate_air_physics(*(table.to(device) for table in air_physics(data)))
        if experiment.model.air_drift and hasattr(model, "calibrate_air_drift"):
            model.calibrate_air_drift(*(table.to(device) for table in air_drift(data)))
        if experiment.model.ground_friction and hasattr(model, "calibrate_ground_friction"):
            model.calibrate_ground_friction(*(table.to(device) for table in ground_friction(data)))
        if experiment.model.ground_from_surfaces and hasattr(model, "calibrate_ground_spans"):
            model.calibrate_ground_spans(surface_spans(data, surfaces).to(device))
        if experiment.model.ecb_landing and hasattr(model, "calibrate_ecb_landing"):
            model.calibrate_ecb_landing(*(table.to(device) for table in ecb_landings(data, surfaces)))
        run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)
        run_dir = Path(root.runs_dir) / experiment.name / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if progress:
        print(
            f"run {run_dir}: {count_parameters(model):,} parameters, device {device}, "
            f"{len(train_md5s)} train / {len(val_md5s)} val games, "
            f"{train_batches.num_windows:,} / {val_batches.num_windows:,} windows"
        )
        if augment is not None:
            print(augment.describe())
        if data.anomalies:
            print(
                "encoding anomalies (field: kind=count): "
                + "; ".join(
                    f"{f}: " + ", ".join(f"{k}={v}" for k, v in kinds.items())
                    for f, kinds in sorted(data.anomalies.items())
                )
            )

    # 4. wandb: offline files under the run folder unless the user gave a key; off with --no-wandb.
    wandb_run = _start_wandb(experiment, run_dir, run_id) if cfg.wandb else None

    manifest: dict[str, Any] = {
        "run_id": run_id,
        "experiment": experiment.name,
        "num_params": count_parameters(model),
        "data_fingerprint": data.data_fingerprint,
        "game_md5s": {"train": train_md5s, "val": val_md5s},
        "num_frames": {"train": data.num_frames("train"), "val": data.num_frames("val")},
        "shards": {"path": str(folder), "encoding_id": folder.name},
        "encoding_anomalies": data.anomalies,
        "config": experiment.model_dump(),
        "encoding": experiment.encoding.model_dump(),
        "encoding_dims": spec.describe(),
        "git_commit": _git_commit(),
        "machine": _machine(device),
        "dagster_run_id": dagster_run_id,
        "wandb_run_id": wandb_run.id if wandb_run else None,
        "resumed_from": str(resume) if resume else None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "all_epochs": all_epochs,
    }
    best_path, final_path = run_dir / "best.pt", run_dir / "final.pt"
    best_loss = min((e["val"].get("loss", math.inf) for e in all_epochs), default=math.inf)

    def on_epoch(record: dict[str, Any], opt: torch.optim.Optimizer) -> None:
        nonlocal best_loss
        all_epochs.append(record)
        extra = dict(
            epoch=record["epoch"],
            step=record["step"],
            metrics=record["val"],
            data_fingerprint=data.data_fingerprint,
            run_id=run_id,
            delta_scale=std.cpu() if std is not None else None,
        )
        save_checkpoint(final_path, model, opt, experiment, **extra)
        val_loss = record["val"].get("loss", math.inf)
        if val_loss < best_loss or not best_path.exists():
            best_loss = val_loss
            save_checkpoint(best_path, model, opt, experiment, **extra)
            manifest["best_epoch"] = record["epoch"]
        manifest["best_val_loss"] = best_loss
        manifest["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_manifest(run_dir, manifest)
        if wandb_run is not None:
            wandb_run.log(
                {
                    **{f"train/{k}": v for k, v in record["train"].items()},
                    **{f"val/{k}": v for k, v in record["val"].items()},
                    "epoch": record["epoch"],
                    "lr": record["lr"],
                    "samples_per_s": record["samples_per_s"],
                },
                step=record["step"],
            )

    # 5. Train.
    try:
        fit(
            model,
            experiment,
            train_batches,
            val_batches,
            device=device,
            delta_scale=std,
            optimizer=optimizer,
            start_epoch=start_epoch,
            start_step=start_step,
            on_epoch=on_epoch,
            progress=progress,
            loss_fn=loss_fn,
            make_metrics=make_metrics,
        )
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    if not all_epochs:
        raise ValueError(f"nothing to train: the checkpoint is at epoch {start_epoch} of {cfg.epochs}")
    last = all_epochs[-1]
    return RunResult(
        run_dir=run_dir,
        manifest=manifest,
        best_checkpoint=best_path,
        final_checkpoint=final_path,
        metrics={**last["val"], "beats_persistence": last["beats_persistence"]},
    )


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    from meleewm_core.store import write_json_atomic

    write_json_atomic(run_dir / "manifest.json", manifest)


def _start_wandb(experiment: ExperimentConfig, run_dir: Path, run_id: str):
    try:
        import wandb
    except ImportError:
        print(
            "wandb is not installed here: logging to the run manifest only (pass --no-wandb to silence)",
            file=sys.stderr,
        )
        return None

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return wandb.init(
        project=experiment.train.wandb_project,
        name=f"{experiment.name}/{run_id}",
        dir=str(run_dir),
        config=experiment.model_dump(),
        mode=mode,
        reinit="finish_previous",
    )
