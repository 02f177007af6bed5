"""Windows: never across games, same content in every loading mode, press events, preflight."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from meleewm_core.config import EncodingConfig
from meleewm_core.data import FrameData, MemmapBatches, ResidentBatches, ShapeError, preflight
from meleewm_core.encoding import EncodingSpec
from meleewm_core.shards import encode_shards
from meleewm_core.store import DataRoot

K = 10


@pytest.fixture(scope="module")
def press_shards(tmp_path_factory, parsed_root):
    root = DataRoot(tmp_path_factory.mktemp("data_root"))
    shutil.copytree(parsed_root.root, root.root, dirs_exist_ok=True)
    encoding = EncodingConfig(press_events=True)
    return encode_shards(root, encoding, progress=False).path, EncodingSpec(encoding)


def test_windows_stay_inside_games_and_hold_the_right_frames(press_shards):
    folder, spec = press_shards
    data = FrameData.from_shards(folder, spec, train_percent=50)
    floats = np.concatenate([f for f, _ in data.shards])
    targets = np.concatenate(data.targets("train", K))
    starts = {g.offset: g for g in data.games if g.shard == 0}
    for game in data.games:
        rows = targets[(targets >= game.offset) & (targets < game.offset + game.num_frames)]
        if game.split == "train":
            assert rows.min() == game.offset + K and rows.max() == game.offset + game.num_frames - 1
        else:
            assert len(rows) == 0
    assert len(starts) == len(data.games)

    batch = next(iter(ResidentBatches(data, "train", batch_size=64, context_len=K, shuffle=False)))
    t = int(targets[0])
    assert torch.equal(batch.float_ctx[0], torch.from_numpy(floats[t - K : t]))
    assert torch.equal(batch.float_tgt[0], torch.from_numpy(floats[t]))
    buttons = spec.button_cols
    pressed = (floats[t, buttons] > 0.5) & (floats[t - 1, buttons] < 0.5)
    assert batch.next_ctrl.shape == (64, 42)
    assert torch.equal(batch.next_ctrl[0, :26], torch.from_numpy(floats[t, spec.controller_cols]))
    assert torch.equal(batch.next_ctrl[0, 26:], torch.from_numpy(pressed.astype(np.float32)))
    preflight(batch, spec, K)


def test_memmap_streaming_serves_the_same_windows_as_ram(press_shards):
    folder, spec = press_shards
    in_ram = FrameData.from_shards(folder, spec, train_percent=50)
    mapped = FrameData.from_shards(folder, spec, mmap=True, train_percent=50)
    assert isinstance(mapped.shards[0][0], np.memmap)

    def epoch_sums(batches):
        total = torch.zeros(spec.float_per_frame, dtype=torch.float64)
        count = 0
        for batch in batches:
            total += batch.float_tgt.double().sum(0) + batch.float_ctx.double().sum((0, 1))
            count += len(batch.float_tgt)
        return total, count

    ram_sums, ram_count = epoch_sums(ResidentBatches(in_ram, "val", batch_size=512, context_len=K, seed=1))
    map_sums, map_count = epoch_sums(MemmapBatches(mapped, "val", batch_size=512, context_len=K, seed=2))
    assert ram_count == map_count == in_ram.num_frames("val") - K * len(in_ram.md5s("val"))
    assert torch.allclose(ram_sums, map_sums)


def test_preflight_names_array_shapes_and_flags(press_shards):
    folder, spec = press_shards
    data = FrameData.from_shards(folder, spec, train_percent=50)
    batch = next(iter(ResidentBatches(data, "train", batch_size=8, context_len=K)))
    plain = EncodingSpec(EncodingConfig())
    with pytest.raises(
        ShapeError, match=r"(?s)press_events=False.*next_ctrl: shape \(B, 42\), expected \(B, 26\)"
    ):
        preflight(batch, plain, K)


def test_a_horizon_adds_the_following_frames_and_never_crosses_a_game(press_shards):
    folder, spec = press_shards
    data = FrameData.from_shards(folder, spec, train_percent=50)
    horizon = 5
    one_step = np.concatenate(data.targets("train", K))
    targets = np.concatenate(data.targets("train", K, horizon))
    for game in (g for g in data.games if g.split == "train"):
        rows = targets[(targets >= game.offset) & (targets < game.offset + game.num_frames)]
        assert rows.max() == game.offset + game.num_frames - horizon
    assert len(one_step) - len(targets) == (horizon - 1) * sum(g.split == "train" for g in data.games)

    floats = np.concatenate([f for f, _ in data.shards])
    batch = next(
        iter(ResidentBatches(data, "train", batch_size=8, context_len=K, shuffle=False, horizon=horizon))
    )
    t = int(targets[0])
    assert batch.horizon == horizon and batch.ahead_float.shape == (8, horizon - 1, spec.float_per_frame)
    assert torch.equal(batch.ahead_float[0], torch.from_numpy(floats[t + 1 : t + horizon]))
    third = batch.step(2, batch.float_ctx, batch.int_ctx)
    assert torch.equal(third.float_tgt[0], torch.from_numpy(floats[t + 2]))
    pressed = (floats[t + 2, spec.button_cols] > 0.5) & (floats[t + 1, spec.button_cols] < 0.5)
    assert torch.equal(third.next_ctrl[0, 26:], torch.from_numpy(pressed.astype(np.float32)))
