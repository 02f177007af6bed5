"""Training windows from encoded shards: K context frames, the next frame's controllers, the target.

A window ending at target row ``t`` of a game holds context rows ``t-K .. t-1``, the conditioning
(both players' controllers at ``t``, plus rising-edge presses ``t-1 -> t`` with ``press_events``)
and the full target frame ``t`` (floats and ints): each loss head picks what it predicts from it.
Valid targets are precomputed per game (``t`` from ``start+K`` to ``end-1``), so a window never
crosses a game boundary.

Three ways to serve batches, all yielding ``Batch`` and all built on ``gather_batch``:

* ``ResidentBatches(device="cpu")``: every shard in RAM as torch tensors, shuffled per epoch.
* ``ResidentBatches(device="cuda")``: the same, GPU-resident; the permutation and the gather run
  on the device, so no DataLoader or host transfer sits in the loop.
* ``MemmapBatches``: shards stay memory-mapped; one shard at a time is read and shuffled, so data
  larger than RAM streams (shards are visited in a random order each epoch).

Imports only numpy, torch and the shard index model (no polars): this runs on a GPU box.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from meleewm_core.augment import WindowAugment
from meleewm_core.encoding import EncodingSpec
from meleewm_core.shards import ShardError, check_shard_shapes, read_index, shard_arrays, split_of


class Batch(NamedTuple):
    float_ctx: torch.Tensor  # (B, K, float_per_frame)
    int_ctx: torch.Tensor  # (B, K, int_per_frame) long
    next_ctrl: torch.Tensor  # (B, ctrl_conditioning_dim)
    float_tgt: torch.Tensor  # (B, float_per_frame): the whole target frame
    int_tgt: torch.Tensor  # (B, int_per_frame) long
    # With a horizon H > 1 (multi-step training), the H-1 frames after the target: their
    # conditioning (B, H-1, ctrl_conditioning_dim) and the frames themselves; else None.
    ahead_ctrl: torch.Tensor | None = None
    ahead_float: torch.Tensor | None = None
    ahead_int: torch.Tensor | None = None

    def step(self, j: int, float_ctx: torch.Tensor, int_ctx: torch.Tensor) -> Batch:
        """The one-step batch predicting the ``j``-th frame (0 = the target) from the given context."""
        if j == 0:
            return Batch(float_ctx, int_ctx, self.next_ctrl, self.float_tgt, self.int_tgt)
        return Batch(
            float_ctx,
            int_ctx,
            self.ahead_ctrl[:, j - 1],
            self.ahead_float[:, j - 1],
            self.ahead_int[:, j - 1],
        )

    @property
    def horizon(self) -> int:
        return 1 if self.ahead_float is None else 1 + self.ahead_float.shape[1]


class ShapeError(ValueError):
    """Data and config disagree; the message names the array, both shapes and the config flags."""


@dataclass(frozen=True)
class GameSpan:
    md5: str
    shard: int  # position in FrameData.shards
    offset: int  # first row inside that shard
    num_frames: int
    split: str


@dataclass
class FrameData:
    """Encoded frames of a shard set, per shard (numpy arrays or memmaps), and where each game lies."""

    spec: EncodingSpec
    shards: list[tuple[np.ndarray, np.ndarray]]
    games: list[GameSpan]
    data_fingerprint: str
    anomalies: dict

    @classmethod
    def from_shards(
        cls,
        folder: str | Path,
        spec: EncodingSpec,
        *,
        mmap: bool = False,
        max_games: int | None = None,
        train_percent: int = 90,
    ) -> FrameData:
        """Open a shard set; ``max_games`` keeps the first N games by MD5. Shapes are checked first."""
        from meleewm_core.shards import data_fingerprint

        index = read_index(folder)
        if index.encoding != spec.config:
            raise ShapeError(
                f"{folder}: shards were encoded with a different encoding config than the experiment's "
                f"(index encoding_id {index.encoding_id}); encode them with this config"
            )
        check_shard_shapes(folder, index, spec)
        entries = sorted(index.games, key=lambda g: g.md5)
        if max_games is not None:
            entries = entries[:max_games]
        if not entries:
            raise ShardError(f"{folder}: the shard set holds no games")
        wanted = {g.shard for g in entries}
        names = [s.name for s in index.shards if s.name in wanted]
        shards = [shard_arrays(folder, name, mmap=mmap) for name in names]
        position = {name: i for i, name in enumerate(names)}
        games = [
            GameSpan(g.md5, position[g.shard], g.offset, g.num_frames, split_of(g.md5, train_percent))
            for g in entries
        ]
        return cls(spec, shards, games, data_fingerprint(g.md5 for g in entries), index.anomalies)

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """All rows as (floats, ints) tensors on ``device``, made once and shared by the train and
        validation loaders (on a GPU the dataset is held once, not once per split)."""
        cache = self.__dict__.setdefault("_tensors", {})
        if str(device) not in cache:
            floats = torch.from_numpy(_joined([f for f, _ in self.shards])).to(device)
            ints = torch.from_numpy(_joined([i for _, i in self.shards])).to(device)
            cache[str(device)] = (floats, ints)
        return cache[str(device)]

    def game_rows(self, split: str) -> Iterator[tuple[GameSpan, np.ndarray, np.ndarray]]:
        """Each game of ``split`` with its (floats, ints) rows."""
        for game in self.games:
            if game.split == split:
                floats, ints = self.shards[game.shard]
                yield (
                    game,
                    floats[game.offset : game.offset + game.num_frames],
                    ints[game.offset : game.offset + game.num_frames],
                )

    def md5s(self, split: str) -> list[str]:
        return [g.md5 for g in self.games if g.split == split]

    def num_frames(self, split: str | None = None) -> int:
        return sum(g.num_frames for g in self.games if split is None or g.split == split)

    def targets(self, split: str, context_len: int, horizon: int = 1) -> list[np.ndarray]:
        """Per shard, the rows that can be predicted from a full window of ``context_len`` frames
        and are followed by ``horizon - 1`` frames of the same game."""
        per_shard: list[list[np.ndarray]] = [[] for _ in self.shards]
        for game in self.games:
            if game.split == split and game.num_frames >= context_len + horizon:
                start = game.offset + context_len
                end = game.offset + game.num_frames - (horizon - 1)
                per_shard[game.shard].append(np.arange(start, end, dtype=np.int64))
        return [np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for parts in per_shard]


class WindowColumns:
    """Column indices ``gather_batch`` needs, as tensors on one device."""

    def __init__(self, spec: EncodingSpec, context_len: int, device: torch.device | str, horizon: int = 1):
        self.context_len = context_len
        self.horizon = horizon
        self.offsets = torch.arange(-context_len, horizon, device=device)
        self.controller = torch.tensor(spec.controller_cols, device=device)
        self.buttons = torch.tensor(spec.button_cols, device=device) if spec.config.press_events else None


def gather_batch(
    floats: torch.Tensor,
    ints: torch.Tensor,
    targets: torch.Tensor,
    cols: WindowColumns,
    augment: WindowAugment | None = None,
) -> Batch:
    """Windows ending at each row of ``targets`` (rows of ``floats``/``ints``, on their device),
    with the ``cols.horizon - 1`` frames after each target, each window augmented as a whole."""
    k = cols.context_len
    rows = targets[:, None] + cols.offsets  # (B, K+H)
    float_win = floats[rows]
    int_win = ints[rows].long()
    if augment is not None:
        float_win, int_win = augment(float_win, int_win)
    predicted = float_win[:, k:]  # (B, H, F)
    next_ctrl = predicted.index_select(2, cols.controller)
    if cols.buttons is not None:
        now = predicted.index_select(2, cols.buttons) > 0.5
        before = float_win[:, k - 1 : -1].index_select(2, cols.buttons) < 0.5
        next_ctrl = torch.cat([next_ctrl, (now & before).to(next_ctrl.dtype)], dim=2)
    ahead = (
        (next_ctrl[:, 1:], predicted[:, 1:], int_win[:, k + 1 :]) if cols.horizon > 1 else (None, None, None)
    )
    return Batch(float_win[:, :k], int_win[:, :k], next_ctrl[:, 0], predicted[:, 0], int_win[:, k], *ahead)


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of all shards' rows; a single in-RAM shard is used as it is (no copy)."""
    if len(arrays) == 1 and not isinstance(arrays[0], np.memmap) and arrays[0].flags.writeable:
        return arrays[0]
    return np.concatenate([np.asarray(a) for a in arrays])


def _capped(batches: int, max_batches: int | None) -> int:
    return min(batches, max_batches) if max_batches is not None else batches


class ResidentBatches:
    """All frames of the split's shards as tensors on ``device`` (RAM for "cpu"); one epoch per iter."""

    def __init__(
        self,
        data: FrameData,
        split: str,
        *,
        batch_size: int,
        context_len: int,
        device: torch.device | str = "cpu",
        shuffle: bool = True,
        seed: int = 0,
        max_batches: int | None = None,
        drop_last: bool = False,
        horizon: int = 1,
        augment: WindowAugment | None = None,
    ):
        self.device = torch.device(device)
        self.augment = augment.to(self.device) if augment is not None else None
        per_shard = data.targets(split, context_len, horizon)
        offsets = np.cumsum([0] + [len(f) for f, _ in data.shards])
        if sum(len(t) for t in per_shard) == 0:
            raise ShardError(f"no {split} windows of {context_len + horizon} frames in the shard set")
        self.floats, self.ints = data.tensors(self.device)
        all_targets = np.concatenate([t + offsets[s] for s, t in enumerate(per_shard)])
        self.targets = torch.from_numpy(all_targets).to(self.device)
        self.cols = WindowColumns(data.spec, context_len, self.device, horizon)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.max_batches = max_batches
        # Dropping the ragged last batch keeps every step the same shape (no recompilation).
        self.drop_last = drop_last and len(self.targets) >= batch_size
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def num_windows(self) -> int:
        return len(self.targets)

    def __len__(self) -> int:
        windows = len(self.targets)
        batches = windows // self.batch_size if self.drop_last else -(-windows // self.batch_size)
        return _capped(batches, self.max_batches)

    def __iter__(self) -> Iterator[Batch]:
        if self.shuffle:
            order = torch.randperm(len(self.targets), device=self.device, generator=self.generator)
            targets = self.targets[order]
        else:
            targets = self.targets
        for i in range(len(self)):
            chunk = targets[i * self.batch_size : (i + 1) * self.batch_size]
            yield gather_batch(self.floats, self.ints, chunk, self.cols, self.augment)


class MemmapBatches:
    """Streams from memory-mapped shards: one shard in RAM at a time, shuffled within it."""

    def __init__(
        self,
        data: FrameData,
        split: str,
        *,
        batch_size: int,
        context_len: int,
        device: torch.device | str = "cpu",
        shuffle: bool = True,
        seed: int = 0,
        max_batches: int | None = None,
        horizon: int = 1,
        augment: WindowAugment | None = None,
    ):
        self.data = data
        self.device = torch.device(device)
        self.augment = augment.to(self.device) if augment is not None else None
        self.per_shard = data.targets(split, context_len, horizon)
        if sum(len(t) for t in self.per_shard) == 0:
            raise ShardError(f"no {split} windows of {context_len + horizon} frames in the shard set")
        self.cols = WindowColumns(data.spec, context_len, self.device, horizon)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.max_batches = max_batches
        self.rng = np.random.default_rng(seed)

    @property
    def num_windows(self) -> int:
        return sum(len(t) for t in self.per_shard)

    def __len__(self) -> int:
        return _capped(sum(-(-len(t) // self.batch_size) for t in self.per_shard), self.max_batches)

    def __iter__(self) -> Iterator[Batch]:
        order = self.rng.permutation(len(self.per_shard)) if self.shuffle else range(len(self.per_shard))
        produced = 0
        for shard in order:
            targets = self.per_shard[shard]
            if len(targets) == 0:
                continue
            # Read only the rows this split's windows touch, then drop the memmap pages again.
            first, last = int(targets.min()) - self.cols.context_len, int(targets.max()) + self.cols.horizon
            floats_map, ints_map = self.data.shards[shard]
            floats = torch.from_numpy(np.array(floats_map[first:last])).to(self.device)
            ints = torch.from_numpy(np.array(ints_map[first:last])).to(self.device)
            local = targets - first
            if self.shuffle:
                local = self.rng.permutation(local)
            local = torch.from_numpy(local).to(self.device)
            for i in range(0, len(local), self.batch_size):
                if self.max_batches is not None and produced >= self.max_batches:
                    return
                yield gather_batch(floats, ints, local[i : i + self.batch_size], self.cols, self.augment)
                produced += 1


def make_batches(
    data: FrameData,
    split: str,
    *,
    mode: str,
    batch_size: int,
    context_len: int,
    device: torch.device | str,
    shuffle: bool,
    seed: int = 0,
    max_batches: int | None = None,
    horizon: int = 1,
    augment: WindowAugment | None = None,
):
    """``mode``: "memory", "memmap", "gpu" or "auto" (GPU-resident on CUDA, else in RAM).
    ``horizon`` > 1 adds the frames after each target (``Batch.ahead_*``) for multi-step training;
    ``augment`` transforms each gathered window (training only)."""
    device = torch.device(device)
    if mode == "auto":
        mode = "gpu" if device.type == "cuda" else "memory"
    kwargs = dict(
        batch_size=batch_size,
        context_len=context_len,
        shuffle=shuffle,
        seed=seed,
        max_batches=max_batches,
        horizon=horizon,
        augment=augment,
    )
    if mode == "memmap":
        return MemmapBatches(data, split, device=device, **kwargs)
    if mode == "gpu":
        return ResidentBatches(data, split, device=device, drop_last=shuffle, **kwargs)
    if mode == "memory":
        # Batches are built in RAM and moved per step (a CPU run has nothing to move).
        return _MovedBatches(ResidentBatches(data, split, device="cpu", drop_last=shuffle, **kwargs), device)
    raise ValueError(f"unknown loader mode {mode!r}; use auto, memory, memmap or gpu")


class _MovedBatches:
    def __init__(self, inner: ResidentBatches, device: torch.device):
        self.inner = inner
        self.device = device

    @property
    def num_windows(self) -> int:
        return self.inner.num_windows

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.inner:
            if self.device.type == "cpu":
                yield batch
            else:
                yield Batch(*(None if t is None else t.to(self.device, non_blocking=True) for t in batch))


def expected_shapes(spec: EncodingSpec, context_len: int) -> dict[str, tuple[int, ...]]:
    """Per-sample shape of each batch array for this encoding (the batch dimension left out)."""
    return {
        "float_ctx": (context_len, spec.float_per_frame),
        "int_ctx": (context_len, spec.int_per_frame),
        "next_ctrl": (spec.ctrl_conditioning_dim,),
        "float_tgt": (spec.float_per_frame,),
        "int_tgt": (spec.int_per_frame,),
    }


def preflight(batch: Batch, spec: EncodingSpec, context_len: int) -> None:
    """Fail before training when a batch does not have the shapes the model will expect."""
    cfg = spec.config
    flags = (
        f"context_len={context_len}, state_age_as_embed={cfg.state_age_as_embed}, "
        f"press_events={cfg.press_events}, action_age_as_embed={cfg.action_age_as_embed}"
    )
    problems = []
    for name, expected in expected_shapes(spec, context_len).items():
        got = tuple(getattr(batch, name).shape[1:])
        if got != expected:
            problems.append(
                f"{name}: shape (B, {', '.join(map(str, got))}), expected (B, {', '.join(map(str, expected))})"
            )
    if problems:
        raise ShapeError("shape preflight failed (" + flags + "):\n  " + "\n  ".join(problems))
