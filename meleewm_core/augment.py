"""Training-window augmentation (``train.augment``): mirror images and swapped player order.

Melee's rules do not care which side of the stage a fight is on, nor which port a player holds, so
each training window can be replaced by its mirror image or by itself with the players swapped.

* ``mirror``: x and every horizontal velocity change sign, facing and the horizontal stick axes
  flip (the encoded sticks are 0.5 at neutral), DeadLeft and DeadRight swap, and each ground id
  becomes the id of the surface at the mirrored place. That last part needs the stage's
  surfaces: ``mirrored_grounds`` pairs them from the lines ``train.stage_surfaces`` measures, and a
  window on a stage with no such pairing (an asymmetric stage), or touching a surface without a
  measured partner, is left as it is.
* ``swap_players``: player 0's columns and player 1's change places.

Each applies to a window (context, target and the frames after it alike) with probability 1/2,
so an epoch holds as many windows as before: the training budget does not change.

Imports only torch and the encoding (no polars): this runs on a GPU box.
"""

from __future__ import annotations

import torch

from meleewm_core.config import Augmentation
from meleewm_core.encoding import NUM_PLAYERS, EncodingSpec

# Melee's DeadLeft and DeadRight action ids: the only actions named after a side of the screen
# rather than the character's facing.
DEAD_LEFT, DEAD_RIGHT = 1, 2
MIRRORED_FLOATS = ("x", "self_x_air", "self_x_ground", "knockback_x")
FLIPPED_FLOATS = ("facing", "main_x", "c_x")
# How far a surface's mirror image may sit from its partner (game units): the measured extents are
# quantiles of where characters stood, a unit or two inside the real edges.
EXTENT_TOLERANCE = 3.0
HEIGHT_TOLERANCE = 0.5
SLOPE_TOLERANCE = 0.01
OVERLAP_HEIGHT = 5.0


def mirrored_grounds(
    line: torch.Tensor, extent: torch.Tensor, known: torch.Tensor, spec: EncodingSpec
) -> torch.Tensor:
    """(stage_vocab, ground_vocab) long: the ground id at the mirror image of each surface, or -1.

    From ``train.stage_surfaces``' lines y = a + b*x and x extents: a surface's partner is the
    known surface with the same height, the opposite slope and the mirrored extent (itself for a
    centred one). A stage counts as symmetric when at least one surface pairs and no unpaired
    surface's mirror image lies on another known surface; only then does ground 0 (no surface, or
    a replay too old to record one) map to itself. Everything else is -1."""
    to_units = torch.tensor([spec.scale("y"), spec.scale("y") / spec.scale("x")])
    stages, grounds = known.shape
    table = torch.full((stages, grounds), -1, dtype=torch.long)
    for stage in range(stages):
        ids = torch.nonzero(known[stage]).flatten().tolist()
        surfaces = {
            g: (*(line[stage, g] / to_units).tolist(), *(extent[stage, g] / spec.scale("x")).tolist())
            for g in ids
        }
        partners: dict[int, int] = {}
        symmetric = True
        for g, (a, b, lo, hi) in surfaces.items():
            image = (a, -b, -hi, -lo)
            match = [h for h, other in surfaces.items() if _same_surface(image, other)]
            if match:
                partners[g] = match[0]
            elif any(_overlapping(image, other) for other in surfaces.values()):
                symmetric = False
        if partners and symmetric:
            table[stage, 0] = 0
            for g, h in partners.items():
                table[stage, g] = h
    return table


def _same_surface(one: tuple[float, ...], other: tuple[float, ...]) -> bool:
    (a, b, lo, hi), (a2, b2, lo2, hi2) = one, other
    return (
        abs(a - a2) <= HEIGHT_TOLERANCE
        and abs(b - b2) <= SLOPE_TOLERANCE
        and abs(lo - lo2) <= EXTENT_TOLERANCE
        and abs(hi - hi2) <= EXTENT_TOLERANCE
    )


def _overlapping(one: tuple[float, ...], other: tuple[float, ...]) -> bool:
    """Whether two surfaces share a stretch of x at about the same height."""
    (a, b, lo, hi), (a2, b2, lo2, hi2) = one, other
    start, end = max(lo, lo2), min(hi, hi2)
    middle = (start + end) / 2
    return end - start > EXTENT_TOLERANCE and abs((a + b * middle) - (a2 + b2 * middle)) <= OVERLAP_HEIGHT


class WindowAugment:
    """Applies ``kinds`` (``train.augment``, validated by its config) to gathered windows, on their device."""

    def __init__(
        self,
        spec: EncodingSpec,
        kinds: tuple[Augmentation, ...],
        seed: int = 0,
        ground_mirror: torch.Tensor | None = None,
    ):
        if "mirror" in kinds and ground_mirror is None:
            raise ValueError("the mirror augmentation needs the stages' mirrored ground ids")
        self.kinds = list(kinds)
        self.seed = seed
        players = range(NUM_PLAYERS)
        per_float, per_int = spec.float_per_player, spec.int_per_player
        swapped = [(NUM_PLAYERS - 1 - p) for p in players]
        self.float_order = torch.tensor([q * per_float + i for q in swapped for i in range(per_float)])
        self.int_order = torch.tensor(
            [q * per_int + i for q in swapped for i in range(per_int)] + [spec.stage_col]
        )
        sign = torch.ones(spec.float_per_frame)
        offset = torch.zeros(spec.float_per_frame)
        for p in players:
            for name in MIRRORED_FLOATS:
                sign[spec.float_col(p, name)] = -1
            for name in FLIPPED_FLOATS:
                sign[spec.float_col(p, name)], offset[spec.float_col(p, name)] = -1, 1
        self.sign, self.offset = sign, offset
        actions = torch.arange(spec.vocab("action"))
        actions[[DEAD_LEFT, DEAD_RIGHT]] = torch.tensor([DEAD_RIGHT, DEAD_LEFT])
        self.action_mirror = actions
        self.action_cols = torch.tensor([spec.int_col(p, "action") for p in players])
        self.ground_cols = torch.tensor([spec.int_col(p, "ground") for p in players])
        self.stage_col = spec.stage_col
        self.ground_mirror = ground_mirror
        self.to("cpu")

    def to(self, device: torch.device | str) -> WindowAugment:
        """Move the lookup tables to ``device`` (where the windows are gathered); returns self."""
        self.device = torch.device(device)
        for name in (
            "float_order",
            "int_order",
            "sign",
            "offset",
            "action_mirror",
            "action_cols",
            "ground_cols",
        ):
            setattr(self, name, getattr(self, name).to(self.device))
        if self.ground_mirror is not None:
            self.ground_mirror = self.ground_mirror.to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        return self

    def describe(self) -> str:
        """One line for the training log: the kinds, and the stages a mirror image exists on."""
        parts = []
        for kind in self.kinds:
            if kind == "mirror":
                stages = (self.ground_mirror[:, 0] == 0).nonzero().flatten().tolist()
                parts.append(f"mirror (stages {stages or 'none: no surfaces pair up'})")
            else:
                parts.append(kind)
        return "augment: " + ", ".join(parts)

    def _coin(self, n: int) -> torch.Tensor:
        return torch.rand(n, device=self.device, generator=self.generator) < 0.5

    def mirrored(
        self, floats: torch.Tensor, ints: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every window's mirror image, and (B,) whether it has one (all its grounds pair up)."""
        stage = ints[..., self.stage_col, None]
        grounds = self.ground_mirror[stage, ints.index_select(2, self.ground_cols)]  # (B, T, P)
        mirrored_ints = ints.clone()
        mirrored_ints[..., self.ground_cols] = grounds.clamp(min=0)
        mirrored_ints[..., self.action_cols] = self.action_mirror[ints.index_select(2, self.action_cols)]
        return floats * self.sign + self.offset, mirrored_ints, (grounds >= 0).flatten(1).all(1)

    def swapped(self, floats: torch.Tensor, ints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return floats.index_select(2, self.float_order), ints.index_select(2, self.int_order)

    def __call__(self, floats: torch.Tensor, ints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) floats and (B, T, I) long ints of whole windows -> the augmented windows."""
        if "mirror" in self.kinds:
            mirror_floats, mirror_ints, possible = self.mirrored(floats, ints)
            flip = (self._coin(len(floats)) & possible)[:, None, None]
            floats, ints = torch.where(flip, mirror_floats, floats), torch.where(flip, mirror_ints, ints)
        if "swap_players" in self.kinds:
            swap_floats, swap_ints = self.swapped(floats, ints)
            swap = self._coin(len(floats))[:, None, None]
            floats, ints = torch.where(swap, swap_floats, floats), torch.where(swap, swap_ints, ints)
        return floats, ints
