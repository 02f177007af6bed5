"""Window augmentation on real games: mirrored surfaces, mirror images, swapped players, the loader."""

from __future__ import annotations

import shutil

import pydantic
import pytest
import torch

from meleewm_core.augment import WindowAugment, mirrored_grounds
from meleewm_core.config import EncodingConfig, ExperimentConfig, TrainConfig
from meleewm_core.data import FrameData, ResidentBatches
from meleewm_core.encoding import NUM_PLAYERS, EncodingSpec
from meleewm_core.shards import encode_shards
from meleewm_core.store import DataRoot
from meleewm_core.train import stage_surfaces, train_run, window_augment

K = 10
BOTH = ("mirror", "swap_players")


@pytest.fixture(scope="module")
def root(tmp_path_factory, parsed_root) -> DataRoot:
    writable = DataRoot(tmp_path_factory.mktemp("augment_root"))
    shutil.copytree(parsed_root.root, writable.root, dirs_exist_ok=True)
    return writable


@pytest.fixture(scope="module")
def data(root) -> FrameData:
    spec = EncodingSpec(EncodingConfig())
    return FrameData.from_shards(
        encode_shards(root, spec.config, progress=False).path, spec, train_percent=90
    )


@pytest.fixture(scope="module")
def surfaces(data):
    return stage_surfaces(data)


@pytest.fixture(scope="module")
def table(data, surfaces) -> torch.Tensor:
    return mirrored_grounds(*surfaces, data.spec)


def windows(batches: ResidentBatches):
    """Every served window as whole (B, K+1, F) floats and ints, with its conditioning controller."""
    parts = [
        (
            torch.cat([b.float_ctx, b.float_tgt[:, None]], 1),
            torch.cat([b.int_ctx, b.int_tgt[:, None]], 1),
            b.next_ctrl,
        )
        for b in batches
    ]
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def test_surfaces_pair_with_their_mirror_images(data, surfaces, table):
    spec = data.spec
    line, extent, known = surfaces
    sx, sy = spec.scale("x"), spec.scale("y")

    def height(stage, ground, x):  # game units
        a, b = line[stage, ground].tolist()
        return (a + b * x * sx) / sy

    pairs = [(s, g, h) for s, g in (table > 0).nonzero().tolist() for h in [int(table[s, g])]]
    assert pairs
    for s, g, h in pairs:
        assert known[s, g] and known[s, h] and table[s, h] == g  # the pairing goes both ways
        x = torch.linspace(*(extent[s, g] / sx).tolist(), 50)
        assert (height(s, h, -x) - height(s, g, x)).abs().max() <= 0.5, (s, g, h)
    assert any(g != h for _, g, h in pairs)  # side platforms pair crosswise, not each with itself
    paired = {s for s, _, _ in pairs}
    assert all(table[s, 0] == 0 for s in paired)  # "no surface" is its own mirror there
    # A stage measured on one side only must not pair at all, ground 0 included.
    one_sided = [s for s in known.any(1).nonzero().flatten().tolist() if s not in paired]
    assert one_sided and all((table[s] == -1).all() for s in one_sided)
    # The training log names the stages that get mirror images, and only those.
    described = WindowAugment(spec, ("mirror",), ground_mirror=table).describe()
    assert described == f"augment: mirror (stages {sorted(paired)})"


def test_a_mirrored_window_is_the_same_game_seen_in_a_mirror(data, surfaces, table):
    spec = data.spec
    line, _, known = surfaces
    batches = ResidentBatches(data, "train", batch_size=8192, context_len=K, max_batches=2)
    floats, ints, _ = windows(batches)
    augment = WindowAugment(spec, ("mirror",), ground_mirror=table)
    mf, mi, possible = augment.mirrored(floats, ints)
    assert possible.float().mean() > 0.5  # most windows of this data can be mirrored
    f, i, mf, mi = floats[possible], ints[possible], mf[possible], mi[possible]
    stage = i[..., spec.stage_col]
    for p in range(NUM_PLAYERS):
        col = {name: spec.float_col(p, name) for name in ("x", "y", "facing", "main_x", "on_ground")}
        assert torch.equal(mf[..., col["x"]], -f[..., col["x"]])
        assert torch.equal(mf[..., col["y"]], f[..., col["y"]])
        assert torch.equal(mf[..., col["facing"]], 1 - f[..., col["facing"]])
        assert torch.allclose(mf[..., col["main_x"]], 1 - f[..., col["main_x"]])
        action = spec.int_col(p, "action")
        assert torch.equal(mi[..., action] == 2, i[..., action] == 1)  # DeadLeft becomes DeadRight
        # A grounded player stands on the surface its mirrored ground id names, at its mirrored x.
        ground = mi[..., spec.int_col(p, "ground")]
        on = (mf[..., col["on_ground"]] > 0.5) & known[stage, ground]
        assert on.sum() > 1000
        a, b = line[stage, ground].unbind(-1)
        off = (mf[..., col["y"]] - a - b * mf[..., col["x"]]).abs() / spec.scale("y")
        assert (off[on] <= 0.1).float().mean() >= 0.95, p
    back_f, back_i, again = augment.mirrored(mf, mi)
    assert again.all() and torch.equal(back_i, i) and torch.allclose(back_f, f, atol=1e-6, rtol=0)


def test_swapping_players_twice_is_the_identity_and_keeps_the_stage(data):
    spec = data.spec
    floats, ints, _ = windows(ResidentBatches(data, "train", batch_size=2048, context_len=K, max_batches=1))
    augment = WindowAugment(spec, ("swap_players",))
    sf, si = augment.swapped(floats, ints)
    nf, ni = spec.float_per_player, spec.int_per_player
    assert torch.equal(sf[..., :nf], floats[..., nf : 2 * nf]) and torch.equal(sf[..., nf:], floats[..., :nf])
    assert torch.equal(si[..., :ni], ints[..., ni : 2 * ni]) and torch.equal(
        si[..., ni : 2 * ni], ints[..., :ni]
    )
    assert torch.equal(si[..., spec.stage_col], ints[..., spec.stage_col])
    assert not torch.equal(sf, floats)
    twice = augment.swapped(sf, si)
    assert torch.equal(twice[0], floats) and torch.equal(twice[1], ints)


def test_the_loader_serves_each_window_mirrored_or_swapped_half_the_time(data, surfaces):
    spec = data.spec
    augment = window_augment(spec, TrainConfig(augment=BOTH), surfaces)
    args = dict(batch_size=4096, context_len=K, shuffle=False)
    floats, ints, _ = windows(ResidentBatches(data, "train", **args))
    served_f, served_i, served_ctrl = windows(ResidentBatches(data, "train", augment=augment, **args))
    assert torch.equal(served_ctrl, served_f[:, -1, spec.controller_cols])  # conditioning is augmented too
    mf, mi, possible = augment.mirrored(floats, ints)
    candidates = {
        "original": (floats, ints),
        "mirrored": (mf, mi),
        "swapped": augment.swapped(floats, ints),
        "both": augment.swapped(mf, mi),
    }
    same = {
        name: (served_f == f).flatten(1).all(1) & (served_i == i).flatten(1).all(1)
        for name, (f, i) in candidates.items()
    }
    same["mirrored"] &= possible  # a window without a mirror image is never mirrored
    same["both"] &= possible
    assert (same["original"] | same["mirrored"] | same["swapped"] | same["both"]).all()
    mirrored = (same["mirrored"] | same["both"])[possible].float().mean()
    swapped = (same["swapped"] | same["both"]).float().mean()
    assert 0.3 < mirrored < 0.7 and 0.3 < swapped < 0.7, (mirrored, swapped)

    with pytest.raises(pydantic.ValidationError, match="augment"):
        ExperimentConfig(name="flip", train=TrainConfig(augment=("flip",)))


def test_a_short_cpu_run_trains_with_augmentation_and_records_it(root):
    quick = TrainConfig(
        epochs=1,
        batch_size=64,
        max_train_batches=2,
        max_val_batches=1,
        wandb=False,
        train_percent=50,
        device="cpu",
    )
    result = train_run(
        ExperimentConfig(name="augment", train=quick), root, progress=False, **{"train.augment": list(BOTH)}
    )
    assert list(result.manifest["config"]["train"]["augment"]) == list(BOTH)
    assert result.best_checkpoint.is_file()
