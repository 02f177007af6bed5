"""Encoding v2.2: one parsed game -> a float matrix and an int matrix, one row per frame.

This module is the only owner of fields, scales, vocabularies, dimensions and column indices
(``EncodingSpec``); every other module asks it. The defaults reproduce the reference
implementation (ScavieFae/nojohns ``worldmodel/``, Feb 2026: ``scripts/build_dataset.py`` reading
peppi, ``data/parse.py`` loading, ``model/encoding.py`` + ``data/dataset.py`` encoding) bit for bit.

Per frame, the float row is ``[p0 | p1]`` with each player block
``continuous (13, or 12 with state_age_as_embed) | binary (3) | controller (13)``:

=================  =============================================  ======================
field              source column (under ``ports.P<n>.leader.``)    value
=================  =============================================  ======================
percent            post.percent                                    trunc(percent) x 0.01
x, y               post.position.x / .y                            x 0.05
shield             post.shield (null -> 60)                        x 0.01
self_x_air ...     post.velocities.{self_x_air, self_y,            x 0.05
                   self_x_ground, knockback_x, knockback_y}
state_age          post.state_age                                  x 0.01 (float variant)
hitlag             post.hitlag                                     x 0.1
stocks             post.stocks (null -> 4)                         x 0.25
combo_count        post.combo_count                                x 0.1 (float64, then f32)
facing             post.direction > 0                              0/1
invulnerable       post.hurtbox_state != 0                         0/1
on_ground          post.airborne == 0 (null -> grounded)           0/1
main_x ... c_y     pre.joystick.x/.y, pre.cstick.x/.y              v / 2 + 0.5 (0..1)
shoulder           max(pre.triggers_physical.l, .r)                0..1
A B X Y Z L R D_UP pre.buttons_physical bits 0x100 0x200 0x400     0/1
                   0x800 0x10 0x40 0x20 0x8
=================  =============================================  ======================

The int row is ``[p0 categoricals | p1 categoricals | stage]`` with per player ``action
(post.state), jumps (post.jumps), character (post.character, internal id), l_cancel, hurtbox
(post.hurtbox_state), ground (post.ground: null/65535 -> 0 = airborne, else id + 1),
last_attack_landed`` and, with ``state_age_as_embed``, ``state_age`` (truncated to an int), and
with ``action_age_as_embed``, ``action_age`` (frames since the action began, capped).
Player 0 is the lower occupied port. Null values of version-gated fields take the reference's
defaults (0 unless noted above).

Anomalies are never silent. Each is mapped by a named rule and counted per field
(``EncodedGame.anomalies``): ``null`` (a version-gated field absent in an old replay: the default
above), ``nonfinite`` (NaN or inf: 0), ``oov`` (a categorical outside ``[0, vocab)``: clamped into
range under ``oov_policy="clamp"``, the reference's behaviour; ``"error"`` raises), and
``out_of_range`` (a controller value outside 0..1, e.g. the 3.78e22 garbage of Slippi 0.1/1.0
triggers: clamped; the reference kept the garbage).

Deviations from the reference, each a fix: netplay rollback frames are resolved by the parser
(the reference fed every rollback row); controller garbage is clamped; counts are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from meleewm_core.config import EncodingConfig

CONTINUOUS_FIELDS = (
    "percent",
    "x",
    "y",
    "shield",
    "self_x_air",
    "self_y",
    "self_x_ground",
    "knockback_x",
    "knockback_y",
    "state_age",
    "hitlag",
    "stocks",
    "combo_count",
)
# The fields whose next-frame delta the reference's continuous head predicts.
CORE_CONTINUOUS_FIELDS = ("percent", "x", "y", "shield")
VELOCITY_FIELDS = ("self_x_air", "self_y", "self_x_ground", "knockback_x", "knockback_y")
BINARY_FIELDS = ("facing", "invulnerable", "on_ground")
# Melee action ids (SSBM data sheet; libmelee's Action enum). 0-10 are the DEAD_* states, 11 SLEEP
# (waiting off screen), 12-13 REBIRTH/REBIRTH_WAIT (the respawn platform).
DEATH_ACTIONS = range(0, 11)
DEATH_OR_RESPAWN_ACTIONS = range(0, 14)
REBIRTH_ACTION = 12
# ENTRY, ENTRY_START, ENTRY_END: the countdown's entry platform, before the players can act.
ENTRY_ACTION, ENTRY_START_ACTION, ENTRY_END_ACTION = 322, 323, 324
# The blast zone each DEAD_* action leaves through: DEAD_DOWN, DEAD_LEFT, DEAD_RIGHT, then the
# DEAD_UP variants (star KOs, falls toward the camera).
BLAST_SIDES = ("left", "right", "bottom", "top")
DEATH_SIDE = (2, 0, 1, *([3] * 8))
# Airborne actions whose vertical speed Melee changes by the character's gravity alone, down to
# its fall speed (or held at its fast-fall speed): JUMP_F/B and JUMP_AERIAL_F/B (25-28, which set
# a take-off speed on their first frame), FALL and its variants (29-34) and the five aerial
# attacks (65-69).
JUMP_ACTIONS = range(25, 29)
FALL_ACTIONS = range(29, 35)
FREE_FALL_ACTIONS = (*JUMP_ACTIONS, *FALL_ACTIONS, *range(65, 70))
# Melee's per-frame decay of a knockback velocity's magnitude, along its direction.
KNOCKBACK_DECAY = 0.051
STICK_FIELDS = ("main_x", "main_y", "c_x", "c_y")
BUTTON_FIELDS = ("A", "B", "X", "Y", "Z", "L", "R", "D_UP")
CONTROLLER_FIELDS = (*STICK_FIELDS, "shoulder", *BUTTON_FIELDS)
# Bits of peppi's ``pre.buttons_physical`` for each button above, in the same order.
BUTTON_BITS = (0x100, 0x200, 0x400, 0x800, 0x10, 0x40, 0x20, 0x8)
PLAYER_CATEGORICALS = ("action", "jumps", "character", "l_cancel", "hurtbox", "ground", "last_attack_landed")
NUM_PLAYERS = 2
# Shards store categoricals as int16: every vocabulary must fit.
INT_DTYPE = np.int16
FLOAT_DTYPE = np.float32

# peppi column (under the leader's pre/post) and the value used where it is null.
_CONTINUOUS_SOURCES = {
    "percent": ("post.percent", 0.0),
    "x": ("post.position.x", 0.0),
    "y": ("post.position.y", 0.0),
    "shield": ("post.shield", 60.0),
    "self_x_air": ("post.velocities.self_x_air", 0.0),
    "self_y": ("post.velocities.self_y", 0.0),
    "self_x_ground": ("post.velocities.self_x_ground", 0.0),
    "knockback_x": ("post.velocities.knockback_x", 0.0),
    "knockback_y": ("post.velocities.knockback_y", 0.0),
    "state_age": ("post.state_age", 0.0),
    "hitlag": ("post.hitlag", 0.0),
    "stocks": ("post.stocks", 4.0),
    "combo_count": ("post.combo_count", 0.0),
}
_CATEGORICAL_SOURCES = {
    "action": ("post.state", 0),
    "jumps": ("post.jumps", 0),
    "character": ("post.character", 0),
    "l_cancel": ("post.l_cancel", 0),
    "hurtbox": ("post.hurtbox_state", 0),
    # 65535 is peppi's "no ground" sentinel; the reference maps it (and null) to 0.
    "ground": ("post.ground", 65535),
    "last_attack_landed": ("post.last_attack_landed", 0),
}
_OTHER_SOURCES = {
    "direction": ("post.direction", 1.0),
    "airborne": ("post.airborne", 0),
    "joystick.x": ("pre.joystick.x", 0.0),
    "joystick.y": ("pre.joystick.y", 0.0),
    "cstick.x": ("pre.cstick.x", 0.0),
    "cstick.y": ("pre.cstick.y", 0.0),
    "trigger_l": ("pre.triggers_physical.l", 0.0),
    "trigger_r": ("pre.triggers_physical.r", 0.0),
    "buttons": ("pre.buttons_physical", 0),
}


class EncodingError(ValueError):
    """A game cannot be encoded; the message names the game and the cause."""


@dataclass(frozen=True)
class EncodingSpec:
    """Every dimension and column index of one ``EncodingConfig``. Build with ``EncodingSpec(cfg)``."""

    config: EncodingConfig

    def __post_init__(self) -> None:
        for name in (*self.categorical_fields, "stage"):
            if self.vocab(name) > np.iinfo(INT_DTYPE).max:
                raise EncodingError(f"vocab of {name} ({self.vocab(name)}) does not fit the int16 shards")

    # --- per-player layout -------------------------------------------------------------------
    @cached_property
    def continuous_fields(self) -> tuple[str, ...]:
        if self.config.state_age_as_embed:
            return tuple(f for f in CONTINUOUS_FIELDS if f != "state_age")
        return CONTINUOUS_FIELDS

    @cached_property
    def categorical_fields(self) -> tuple[str, ...]:
        optional = (
            ("state_age", self.config.state_age_as_embed),
            ("action_age", self.config.action_age_as_embed),
        )
        return (*PLAYER_CATEGORICALS, *(name for name, on in optional if on))

    @property
    def continuous_dim(self) -> int:
        return len(self.continuous_fields)

    @property
    def binary_dim(self) -> int:
        return len(BINARY_FIELDS)

    @property
    def controller_dim(self) -> int:
        return len(CONTROLLER_FIELDS)

    @property
    def float_per_player(self) -> int:
        return self.continuous_dim + self.binary_dim + self.controller_dim

    @property
    def float_per_frame(self) -> int:
        return self.float_per_player * NUM_PLAYERS

    @property
    def int_per_player(self) -> int:
        return len(self.categorical_fields)

    @property
    def int_per_frame(self) -> int:
        return self.int_per_player * NUM_PLAYERS + 1

    @property
    def stage_col(self) -> int:
        return self.int_per_player * NUM_PLAYERS

    # --- column indices ------------------------------------------------------------------------
    def float_col(self, player: int, name: str) -> int:
        """Index of one float field of one player in a frame's float row."""
        base = player * self.float_per_player
        if name in self.continuous_fields:
            return base + self.continuous_fields.index(name)
        if name in BINARY_FIELDS:
            return base + self.continuous_dim + BINARY_FIELDS.index(name)
        if name in CONTROLLER_FIELDS:
            return base + self.continuous_dim + self.binary_dim + CONTROLLER_FIELDS.index(name)
        raise KeyError(f"{name!r} is not a float field of this encoding")

    def int_col(self, player: int, name: str) -> int:
        if name == "stage":
            return self.stage_col
        if name not in self.categorical_fields:
            raise KeyError(f"{name!r} is not a categorical of this encoding")
        return player * self.int_per_player + self.categorical_fields.index(name)

    def continuous_slice(self, player: int) -> slice:
        start = player * self.float_per_player
        return slice(start, start + self.continuous_dim)

    def binary_slice(self, player: int) -> slice:
        start = player * self.float_per_player + self.continuous_dim
        return slice(start, start + self.binary_dim)

    def controller_slice(self, player: int) -> slice:
        start = player * self.float_per_player + self.continuous_dim + self.binary_dim
        return slice(start, start + self.controller_dim)

    def float_cols(self, names: tuple[str, ...]) -> list[int]:
        """Indices of ``names`` for player 0 then player 1."""
        return [self.float_col(p, n) for p in range(NUM_PLAYERS) for n in names]

    @cached_property
    def controller_cols(self) -> list[int]:
        return self.float_cols(CONTROLLER_FIELDS)

    @cached_property
    def button_cols(self) -> list[int]:
        return self.float_cols(BUTTON_FIELDS)

    # --- vocabularies, scales, model sizes -------------------------------------------------------
    def vocab(self, name: str) -> int:
        cfg = self.config
        return {
            "action": cfg.action_vocab,
            "jumps": cfg.jumps_vocab,
            "character": cfg.character_vocab,
            "l_cancel": cfg.l_cancel_vocab,
            "hurtbox": cfg.hurtbox_vocab,
            "ground": cfg.ground_vocab,
            "last_attack_landed": cfg.last_attack_vocab,
            "state_age": cfg.state_age_embed_vocab,
            "action_age": cfg.action_age_embed_vocab,
            "stage": cfg.stage_vocab,
        }[name]

    def embed_dim(self, name: str) -> int:
        cfg = self.config
        return {
            "action": cfg.action_embed_dim,
            "jumps": cfg.jumps_embed_dim,
            "character": cfg.character_embed_dim,
            "l_cancel": cfg.l_cancel_embed_dim,
            "hurtbox": cfg.hurtbox_embed_dim,
            "ground": cfg.ground_embed_dim,
            "last_attack_landed": cfg.last_attack_embed_dim,
            "state_age": cfg.state_age_embed_dim,
            "action_age": cfg.action_age_embed_dim,
            "stage": cfg.stage_embed_dim,
        }[name]

    def scale(self, name: str) -> float:
        """Multiplier from game units to encoded units of a continuous field."""
        cfg = self.config
        if name in ("x", "y"):
            return cfg.xy_scale
        if name in VELOCITY_FIELDS:
            return cfg.velocity_scale
        return {
            "percent": cfg.percent_scale,
            "shield": cfg.shield_scale,
            "state_age": cfg.state_age_scale,
            "hitlag": cfg.hitlag_scale,
            "stocks": cfg.stocks_scale,
            "combo_count": cfg.combo_count_scale,
        }[name]

    @property
    def press_dim(self) -> int:
        return len(BUTTON_FIELDS) * NUM_PLAYERS if self.config.press_events else 0

    @property
    def ctrl_conditioning_dim(self) -> int:
        """Next frame's controllers of both players (+ rising-edge presses with ``press_events``)."""
        return self.controller_dim * NUM_PLAYERS + self.press_dim

    @property
    def frame_embed_dim(self) -> int:
        """Width of one frame fed to the model: floats + every categorical's embedding."""
        per_player = sum(self.embed_dim(n) for n in self.categorical_fields)
        return self.float_per_frame + per_player * NUM_PLAYERS + self.config.stage_embed_dim

    def model_input_dim(self, context_len: int) -> int:
        return self.frame_embed_dim * context_len + self.ctrl_conditioning_dim

    @cached_property
    def float_names(self) -> list[str]:
        """``p<player>.<field>`` for every column of a frame's float row."""
        per_player = (*self.continuous_fields, *BINARY_FIELDS, *CONTROLLER_FIELDS)
        return [f"p{p}.{name}" for p in range(NUM_PLAYERS) for name in per_player]

    @cached_property
    def ctrl_names(self) -> list[str]:
        """Names of the conditioning columns (controllers, then presses with ``press_events``)."""
        names = [f"p{p}.{name}" for p in range(NUM_PLAYERS) for name in CONTROLLER_FIELDS]
        if self.config.press_events:
            names += [f"p{p}.{name}_pressed" for p in range(NUM_PLAYERS) for name in BUTTON_FIELDS]
        return names

    def describe(self) -> dict[str, int]:
        return {
            "float_per_player": self.float_per_player,
            "float_per_frame": self.float_per_frame,
            "int_per_player": self.int_per_player,
            "int_per_frame": self.int_per_frame,
            "frame_embed_dim": self.frame_embed_dim,
            "ctrl_conditioning_dim": self.ctrl_conditioning_dim,
        }


# --- encoding one game ---------------------------------------------------------------------------

AnomalyCounts = dict[str, dict[str, int]]


@dataclass
class EncodedGame:
    floats: np.ndarray  # (T, float_per_frame) float32
    ints: np.ndarray  # (T, int_per_frame) int16
    anomalies: AnomalyCounts = field(default_factory=dict)


def merge_anomalies(total: AnomalyCounts, more: Mapping[str, Mapping[str, int]]) -> AnomalyCounts:
    for name, kinds in more.items():
        slot = total.setdefault(name, {})
        for kind, count in kinds.items():
            slot[kind] = slot.get(kind, 0) + int(count)
    return total


def required_columns(port: int) -> list[str]:
    """The parquet columns the encoder reads for one player (port 1..4)."""
    prefix = f"ports.P{port}.leader."
    sources = (*_CONTINUOUS_SOURCES.values(), *_CATEGORICAL_SOURCES.values(), *_OTHER_SOURCES.values())
    return [prefix + column for column, _ in sources]


class _Counter:
    def __init__(self) -> None:
        self.counts: AnomalyCounts = {}

    def add(self, name: str, kind: str, count: int) -> None:
        if count:
            slot = self.counts.setdefault(name, {})
            slot[kind] = slot.get(kind, 0) + int(count)


def _column(columns: Mapping[str, object], key: str, default, num_frames: int, name: str, counter: _Counter):
    """A column as numpy with nulls filled by ``default`` (counted); an absent column is all null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = columns.get(key)
    if values is None:
        counter.add(name, "null", num_frames)
        return None
    if isinstance(values, pa.ChunkedArray | pa.Array):
        nulls = values.null_count
        if nulls == len(values):
            counter.add(name, "null", nulls)
            return None
        if nulls:
            counter.add(name, "null", nulls)
            values = pc.fill_null(values, default)
        return values.to_numpy(zero_copy_only=False) if isinstance(values, pa.Array) else values.to_numpy()
    return np.asarray(values)


def _finite(values: np.ndarray, name: str, counter: _Counter) -> np.ndarray:
    bad = ~np.isfinite(values)
    if bad.any():
        counter.add(name, "nonfinite", int(bad.sum()))
        values = np.where(bad, 0, values).astype(values.dtype)
    return values


def _categorical(values: np.ndarray, vocab: int, name: str, counter: _Counter, game: str, policy: str):
    outside = (values < 0) | (values >= vocab)
    if outside.any():
        count = int(outside.sum())
        if policy == "error":
            example = values[outside][0]
            raise EncodingError(
                f"game {game}: {count} {name} value(s) outside the vocabulary 0..{vocab - 1} "
                f"(first: {example}); raise {name} vocab or set oov_policy=clamp"
            )
        counter.add(name, "oov", count)
    return np.clip(values, 0, vocab - 1)


def frames_in_action(action: np.ndarray, cap: int) -> np.ndarray:
    """Per frame, how many frames ago the current action began (0 on its first frame), at most ``cap``."""
    index = np.arange(len(action), dtype=np.int64)
    begins = np.ones(len(action), dtype=bool)
    begins[1:] = action[1:] != action[:-1]
    return np.minimum(index - np.maximum.accumulate(np.where(begins, index, 0)), cap)


def _encode_player(columns, port: int, num_frames: int, spec: EncodingSpec, counter: _Counter, game: str):
    cfg = spec.config
    prefix = f"ports.P{port}.leader."

    def get(source: tuple[str, object], name: str, dtype) -> np.ndarray:
        key, default = source
        values = _column(columns, prefix + key, default, num_frames, name, counter)
        if values is None:
            return np.full(num_frames, default, dtype=dtype)
        if np.issubdtype(values.dtype, np.floating):
            values = _finite(values, name, counter)
        return values.astype(dtype, copy=False)

    f32 = np.float32
    raw = {name: get(source, name, f32) for name, source in _CONTINUOUS_SOURCES.items()}
    # The reference stored percent as uint16 (dropping the fraction of stale-move damage),
    # stocks and combo_count as uint8, and multiplied combo_count as int64 (hence in float64).
    raw["percent"] = raw["percent"].astype(np.uint16).astype(f32)
    continuous = {name: (raw[name] * f32(spec.scale(name))).astype(f32) for name in CONTINUOUS_FIELDS}
    combo = get(_CONTINUOUS_SOURCES["combo_count"], "combo_count", np.int64)
    continuous["combo_count"] = (combo * spec.scale("combo_count")).astype(f32)

    hurtbox_raw = get(_CATEGORICAL_SOURCES["hurtbox"], "hurtbox", np.int64)
    binary = {
        "facing": (get(_OTHER_SOURCES["direction"], "facing", f32) > 0).astype(f32),
        "invulnerable": (hurtbox_raw != 0).astype(f32),
        "on_ground": (get(_OTHER_SOURCES["airborne"], "on_ground", np.int64) == 0).astype(f32),
    }

    def stick(source_name: str, name: str) -> np.ndarray:
        return get(_OTHER_SOURCES[source_name], name, f32) / f32(2.0) + f32(0.5)

    controller = {
        "main_x": stick("joystick.x", "main_x"),
        "main_y": stick("joystick.y", "main_y"),
        "c_x": stick("cstick.x", "c_x"),
        "c_y": stick("cstick.y", "c_y"),
        "shoulder": np.maximum(
            get(_OTHER_SOURCES["trigger_l"], "shoulder", f32),
            get(_OTHER_SOURCES["trigger_r"], "shoulder", f32),
        ),
    }
    for name in (*STICK_FIELDS, "shoulder"):
        values = controller[name]
        outside = (values < 0) | (values > 1)
        if outside.any():
            counter.add(name, "out_of_range", int(outside.sum()))
            controller[name] = np.clip(values, f32(0), f32(1))
    bits = get(_OTHER_SOURCES["buttons"], "buttons", np.int64)
    for name, bit in zip(BUTTON_FIELDS, BUTTON_BITS, strict=True):
        controller[name] = ((bits & bit) != 0).astype(f32)

    ints = {
        name: get(_CATEGORICAL_SOURCES[name], name, np.int64)
        for name in PLAYER_CATEGORICALS
        if name != "hurtbox"
    }
    ints["hurtbox"] = hurtbox_raw  # read once above (it also gives "invulnerable"), counted once
    ints["ground"] = np.where(ints["ground"] == 65535, 0, ints["ground"] + 1)
    if cfg.state_age_as_embed:
        ints["state_age"] = raw["state_age"].astype(np.int64)
    if cfg.action_age_as_embed:
        ints["action_age"] = frames_in_action(ints["action"], spec.vocab("action_age") - 1)
    for name in spec.categorical_fields:
        ints[name] = _categorical(ints[name], spec.vocab(name), name, counter, game, cfg.oov_policy)

    float_block = np.stack(
        [continuous[n] for n in spec.continuous_fields]
        + [binary[n] for n in BINARY_FIELDS]
        + [controller[n] for n in CONTROLLER_FIELDS],
        axis=1,
    )
    int_block = np.stack([ints[n] for n in spec.categorical_fields], axis=1)
    return float_block, int_block


def encode_game(
    columns: Mapping[str, object],
    ports: tuple[int, int],
    stage: int,
    spec: EncodingSpec,
    *,
    game: str = "?",
) -> EncodedGame:
    """Encode one game's frames. ``columns`` maps parquet column names to arrays (pyarrow or numpy);
    ``ports`` are the two players' ports (1..4), player 0 first; ``game`` names it in errors."""
    if len(ports) != NUM_PLAYERS:
        raise EncodingError(f"game {game}: expected {NUM_PLAYERS} players, found ports {ports}")
    frame_column = columns.get("frame")
    num_frames = len(frame_column) if frame_column is not None else None
    if num_frames is None:
        key = f"ports.P{ports[0]}.leader.post.position.x"
        if columns.get(key) is None:
            raise EncodingError(f"game {game}: no column {key!r}: is port {ports[0]} in this game?")
        num_frames = len(columns[key])
    counter = _Counter()
    blocks = [_encode_player(columns, port, num_frames, spec, counter, game) for port in ports]
    stage_values = _categorical(
        np.full(num_frames, stage, dtype=np.int64),
        spec.vocab("stage"),
        "stage",
        counter,
        game,
        spec.config.oov_policy,
    )
    floats = np.concatenate([block[0] for block in blocks], axis=1).astype(FLOAT_DTYPE, copy=False)
    ints = np.concatenate([block[1] for block in blocks] + [stage_values[:, None]], axis=1).astype(INT_DTYPE)
    return EncodedGame(np.ascontiguousarray(floats), np.ascontiguousarray(ints), counter.counts)


# --- what a model predicts -------------------------------------------------------------------------

HEADS = ("v22", "full_state")


@dataclass(frozen=True)
class HeadLayout:
    """Fields a model's heads predict, and where they sit in the encoded frame.

    ``v22`` (the reference): deltas of percent, x, y, shield; the 3 binaries; action and jumps.
    ``full_state``: deltas of every continuous field, the binaries and every per-player
    categorical, i.e. everything the next context frame needs (stage is constant and the
    controllers are given).
    """

    spec: EncodingSpec
    heads: str

    @cached_property
    def continuous(self) -> tuple[str, ...]:
        return CORE_CONTINUOUS_FIELDS if self.heads == "v22" else self.spec.continuous_fields

    @cached_property
    def categoricals(self) -> tuple[str, ...]:
        return ("action", "jumps") if self.heads == "v22" else self.spec.categorical_fields

    @cached_property
    def continuous_cols(self) -> list[int]:
        """Float-row indices of the continuous delta outputs: player 0's fields, then player 1's."""
        return self.spec.float_cols(self.continuous)

    @cached_property
    def binary_cols(self) -> list[int]:
        return self.spec.float_cols(BINARY_FIELDS)

    @cached_property
    def position_slots(self) -> list[int]:
        """Indices of the x and y deltas among the continuous delta outputs."""
        return [
            i
            for i, col in enumerate(self.continuous_cols)
            if self.spec.float_names[col].split(".")[1] in ("x", "y")
        ]

    def categorical_col(self, player: int, name: str) -> int:
        return self.spec.int_col(player, name)

    @cached_property
    def logit_heads(self) -> list[tuple[str, int, str, int]]:
        """(output key, player, field, vocab) of every classification head."""
        return [
            (f"p{player}_{name}_logits", player, name, self.spec.vocab(name))
            for name in self.categoricals
            for player in range(NUM_PLAYERS)
        ]


def head_layout(spec: EncodingSpec, heads: str) -> HeadLayout:
    if heads not in HEADS:
        raise ValueError(f"unknown heads {heads!r}; choose one of {HEADS}")
    return HeadLayout(spec, heads)
