"""Slippi replays -> one parquet file per replay, plus a ledger of every file ever seen.

Disk layout under the data root (see ``store.DataRoot``)::

    games/<md5>.parquet   one row per game frame after rollback resolution; column ``frame`` (int32,
                          rising by exactly 1) then peppi's raw frame struct flattened with '.'
                          (``ports.P1.leader.post.position.x`` ...). Every occupied port carries the
                          full newest-version leader column set (pre and post), null where the
                          replay is too old; the follower (Nana) column set, same names under
                          ``follower``, only for ports that have a follower (Ice Climbers). The
                          frame-level columns (``start.*``, ``end.*``, ``item``, ...) are the ones
                          peppi returns for that replay's version. A column without a null in
                          that game is a non-nullable (REQUIRED) field. The game metadata
                          (``GameMeta`` as JSON) sits in the parquet schema metadata under the
                          key ``meleewm``.
    ledger.parquet        one row per (source, path): md5, status ok|failed|skipped, error class
                          and message, parser version, parsed flag, the metadata JSON.

Reading uses peppi's raw call ``peppi_py._peppi.read_slippi`` because the public wrapper drops
fields (items, raw c-stick, instance ids, stage events). Every file is parsed in a worker process
with a per-file timeout, so a Rust panic, a hang or a crash becomes a ledger row, never the end of
the batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from meleewm_core.store import (
    DataRoot,
    atomic_path,
    md5_bytes,
    remove_stale_temp_files,
    write_new_bytes_atomic,
)

# Bump whenever the games files or the metadata change meaning: every replay is then parsed again.
# 1.1: follower (Nana) columns only for ports that have a follower.
PARSER_VERSION = "1.1"
METADATA_KEY = b"meleewm"
DEFAULT_TIMEOUT_S = 60.0
# The parquet write is the dominant cost of a parse, and most of it is a fixed cost per column.
# zstd level 1 without dictionaries: frame data is mostly unique floats, where dictionaries and
# higher levels cost write time for a few percent of size. Data page v2 keeps the def levels
# outside the compressed block (measured ~10% less write time, same size, read by pyarrow and
# polars alike).
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": False,
    "write_statistics": False,
    "data_page_version": "2.0",
}

# ---------------------------------------------------------------------------------------------
# Names for ids. External (CSS) character ids are what `start.players[].character` holds;
# internal ids are what `post.character` holds (they differ: Marth is 9 external, 18 internal).
# ---------------------------------------------------------------------------------------------
CHARACTER_NAMES: dict[int, str] = dict(
    enumerate(
        (
            "Captain Falcon",
            "Donkey Kong",
            "Fox",
            "Mr. Game & Watch",
            "Kirby",
            "Bowser",
            "Link",
            "Luigi",
            "Mario",
            "Marth",
            "Mewtwo",
            "Ness",
            "Peach",
            "Pikachu",
            "Ice Climbers",
            "Jigglypuff",
            "Samus",
            "Yoshi",
            "Zelda",
            "Sheik",
            "Falco",
            "Young Link",
            "Dr. Mario",
            "Roy",
            "Pichu",
            "Ganondorf",
            "Master Hand",
            "Wireframe Male",
            "Wireframe Female",
            "Giga Bowser",
            "Crazy Hand",
            "Sandbag",
            "Popo",
        )
    )
)
# Characters a player can pick on the versus character select screen.
PLAYABLE_CHARACTERS = frozenset(range(26))
INTERNAL_CHARACTER_NAMES: dict[int, str] = dict(
    enumerate(
        (
            "Mario",
            "Fox",
            "Captain Falcon",
            "Donkey Kong",
            "Kirby",
            "Bowser",
            "Link",
            "Sheik",
            "Ness",
            "Peach",
            "Popo",
            "Nana",
            "Pikachu",
            "Samus",
            "Yoshi",
            "Jigglypuff",
            "Mewtwo",
            "Luigi",
            "Marth",
            "Zelda",
            "Young Link",
            "Dr. Mario",
            "Falco",
            "Pichu",
            "Mr. Game & Watch",
            "Ganondorf",
            "Roy",
            "Master Hand",
            "Crazy Hand",
            "Wireframe Male",
            "Wireframe Female",
            "Giga Bowser",
            "Sandbag",
        )
    )
)
STAGE_NAMES: dict[int, str] = dict(
    enumerate(
        (
            "Dummy",
            "Test",
            "Fountain of Dreams",
            "Pokemon Stadium",
            "Princess Peach's Castle",
            "Kongo Jungle",
            "Brinstar",
            "Corneria",
            "Yoshi's Story",
            "Onett",
            "Mute City",
            "Rainbow Cruise",
            "Jungle Japes",
            "Great Bay",
            "Hyrule Temple",
            "Brinstar Depths",
            "Yoshi's Island",
            "Green Greens",
            "Fourside",
            "Mushroom Kingdom I",
            "Mushroom Kingdom II",
            "Akaneia",
            "Venom",
            "Poke Floats",
            "Big Blue",
            "Icicle Mountain",
            "Icetop",
            "Flat Zone",
            "Dream Land N64",
            "Yoshi's Island N64",
            "Kongo Jungle N64",
            "Battlefield",
            "Final Destination",
        )
    )
)
# Stages selectable in versus mode (0 and 1 are debug stages, 21 Akaneia is unused; ids above 32
# appear only in single-player modes, e.g. 81 in Adventure).
VERSUS_STAGES = frozenset(range(2, 33)) - {21}
# Slippi "major scene" of the game start event (3.?+): 2 = versus, 8 = Slippi Online. Anything else
# (Training 28, Tiny 29, Slo-Mo 18, Adventure 4 ...) is a special or single-player mode.
VERSUS_SCENES = frozenset({2, 8})


def character_name(external_id: int | None) -> str:
    if external_id is None:
        return "unknown"
    return CHARACTER_NAMES.get(external_id, f"character {external_id}")


def stage_name(stage_id: int | None) -> str:
    if stage_id is None:
        return "unknown"
    return STAGE_NAMES.get(stage_id, f"stage {stage_id}")


# ---------------------------------------------------------------------------------------------
# The canonical per-port column set: peppi-py 0.8.6 on a Slippi 3.18 replay (the newest format).
# Older replays lack the version-gated fields; they are added as nulls so every game file has the
# same leader columns per occupied port. Follower columns exist only where peppi reports a follower
# (Ice Climbers' Nana): padding every other port with ~50 all-null columns doubled the parquet
# write, the dominant cost of a parse. `test_parse.py` checks this list against peppi's output.
# ---------------------------------------------------------------------------------------------
_F32, _U8, _U16, _U32, _I8 = pa.float32(), pa.uint8(), pa.uint16(), pa.uint32(), pa.int8()
PRE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("random_seed", _U32),
    ("state", _U16),
    ("position.x", _F32),
    ("position.y", _F32),
    ("direction", _F32),
    ("joystick.x", _F32),
    ("joystick.y", _F32),
    ("cstick.x", _F32),
    ("cstick.y", _F32),
    ("triggers", _F32),
    ("buttons", _U32),
    ("buttons_physical", _U16),
    ("triggers_physical.l", _F32),
    ("triggers_physical.r", _F32),
    ("raw_analog_x", _I8),  # 1.2
    ("percent", _F32),  # 1.4
    ("raw_analog_y", _I8),  # 3.15
    ("raw_analog_cstick_x", _I8),
    ("raw_analog_cstick_y", _I8),  # 3.17
)
POST_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("character", _U8),
    ("state", _U16),
    ("position.x", _F32),
    ("position.y", _F32),
    ("direction", _F32),
    ("percent", _F32),
    ("shield", _F32),
    ("last_attack_landed", _U8),
    ("combo_count", _U8),
    ("last_hit_by", _U8),
    ("stocks", _U8),
    ("state_age", _F32),  # 0.2
    ("state_flags.0", _U8),
    ("state_flags.1", _U8),
    ("state_flags.2", _U8),
    ("state_flags.3", _U8),
    ("state_flags.4", _U8),
    ("misc_as", _F32),
    ("airborne", _U8),
    ("ground", _U16),
    ("jumps", _U8),
    ("l_cancel", _U8),  # 2.0
    ("hurtbox_state", _U8),  # 2.1
    ("velocities.self_x_air", _F32),
    ("velocities.self_y", _F32),
    ("velocities.knockback_x", _F32),
    ("velocities.knockback_y", _F32),
    ("velocities.self_x_ground", _F32),  # 3.5
    ("hitlag", _F32),  # 3.8
    ("animation_index", _U32),  # 3.11
    ("last_hit_by_instance", _U16),
    ("instance_id", _U16),  # 3.16
)
PORT_DATA_COLUMNS: tuple[tuple[str, pa.DataType], ...] = tuple(
    (f"pre.{name}", kind) for name, kind in PRE_COLUMNS
) + tuple((f"post.{name}", kind) for name, kind in POST_COLUMNS)
PORT_NAMES = ("P1", "P2", "P3", "P4")
ROLES = ("leader", "follower")
_PORT_ROLE_COLUMNS: dict[tuple[str, str], tuple[tuple[str, pa.DataType], ...]] = {
    (port, role): tuple((f"ports.{port}.{role}.{name}", kind) for name, kind in PORT_DATA_COLUMNS)
    for port in PORT_NAMES
    for role in ROLES
}
_ITEM = pa.struct(
    [
        ("type", _U16),
        ("state", _U8),
        ("direction", _F32),
        ("velocity", pa.struct([("x", _F32), ("y", _F32)])),
        ("position", pa.struct([("x", _F32), ("y", _F32)])),
        ("damage", _U16),
        ("timer", _F32),
        ("id", _U32),
        ("misc", pa.struct([("0", _U8), ("1", _U8), ("2", _U8), ("3", _U8)])),
        ("owner", _I8),
        ("instance_id", _U16),
    ]
)
# Frame-level columns in canonical order and type. Written only when peppi returns them (Slippi
# 2.2+ start, 3.0+ end and items, 3.18+ stage events): padding older replays with them as nulls
# helped no reader, and the nested item lists are among the costliest columns to write.
FRAME_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("start.random_seed", _U32),
    ("start.scene_frame_counter", _U32),
    ("end.latest_finalized_frame", pa.int32()),
    ("item", pa.list_(pa.field("item", _ITEM))),
    ("fod_platform", pa.list_(pa.field("fod_platform", pa.struct([("platform", _U8), ("height", _F32)])))),
    ("dreamland_whispy", pa.list_(pa.field("dreamland_whispy", pa.struct([("direction", _U8)])))),
    (
        "stadium_transformation",
        pa.list_(pa.field("stadium_transformation", pa.struct([("event", _U16), ("type", _U16)]))),
    ),
)

# ---------------------------------------------------------------------------------------------
# Garbage rules. CLEANED values become null (the value is impossible); FLAGGED values are kept but
# counted (the value is unusual but may be real). Both counts go into the metadata per column.
# ---------------------------------------------------------------------------------------------
# Every float column: NaN and +-inf are cleaned. Additionally these ranges are cleaned (suffix of
# the per-port column name -> inclusive range). Evidence: Slippi 0.1/1.0 replays carry 3.78e22 in
# `triggers_physical.r` (hohav__peppi/buttons_abxy.slp); sticks are normalised to [-1, 1] and
# triggers to [0, 1] by the game, so anything outside is corruption.
CLEAN_RANGES: dict[str, tuple[float, float]] = {
    "pre.triggers": (0.0, 1.0),
    "pre.triggers_physical.l": (0.0, 1.0),
    "pre.triggers_physical.r": (0.0, 1.0),
    "pre.joystick.x": (-1.0, 1.0),
    "pre.joystick.y": (-1.0, 1.0),
    "pre.cstick.x": (-1.0, 1.0),
    "pre.cstick.y": (-1.0, 1.0),
}
# Flag limits (inclusive maxima). Internal character ids stop at 32 (Sandbag). Action states: the
# highest seen in the test corpus is 535 (Kirby copy abilities, slippi-js moveTest/id_46.slp);
# character-specific states start at 341, so 600 leaves headroom without hiding corruption.
# Percent is capped at 999 by the game.
FLAG_LIMITS: dict[str, float] = {
    "post.character": 32,
    "post.state": 600,
    "pre.state": 600,
    "post.percent": 999.0,
}
# The rules above by full column name, for every port and role: built once, so a parse does no
# string work per column.
_CLEAN_RANGE_BY_COLUMN: dict[str, tuple[float, float]] = {
    f"ports.{port}.{role}.{suffix}": bounds
    for port in PORT_NAMES
    for role in ROLES
    for suffix, bounds in CLEAN_RANGES.items()
}
_FLAG_LIMIT_BY_COLUMN: dict[str, float] = {
    f"ports.{port}.{role}.{suffix}": limit
    for port in PORT_NAMES
    for role in ROLES
    for suffix, limit in FLAG_LIMITS.items()
}


class PlayerMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int = Field(description="1..4; port 1 <-> column prefix `ports.P1`")
    character: int | None = Field(description="external (CSS) character id")
    character_internal: int | None = Field(description="internal id on the first frame the player exists")
    type: str = Field(description="human | cpu | demo")
    cpu_level: int | None = None
    costume: int | None = None
    team: int | None = Field(default=None, description="team colour when is_teams")
    start_stocks: int | None = None
    netplay_name: str | None = None
    netplay_code: str | None = Field(default=None, description="connect code with an ASCII '#'")
    name_tag: str | None = None
    has_follower: bool = Field(
        default=False, description="true when the games file has follower (Nana) columns for this port"
    )


class GameMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    md5: str
    size_bytes: int
    parser_version: str = PARSER_VERSION
    parsed: bool = Field(description="true when the frames were read and games/<md5>.parquet written")
    not_parsed_reason: str | None = None
    slippi_version: str
    start_time: str | None = Field(default=None, description="metadata startAt (console clock)")
    played_on: str | None = None
    console_nick: str | None = None
    stage: int
    is_teams: bool
    is_pal: bool | None = None
    timer: int | None = Field(default=None, description="timer setting in seconds")
    scene_major: int | None = Field(default=None, description="2 versus, 8 Slippi Online (3.?+)")
    match_id: str | None = None
    game_number: int | None = None
    tiebreaker_number: int | None = None
    num_frames: int | None = Field(default=None, description="frames after rollback resolution")
    num_frame_rows: int | None = Field(default=None, description="rows peppi returned, rollbacks included")
    rollback_rows_dropped: int | None = None
    first_frame: int | None = None
    last_frame: int | None = None
    end_method: str | None = None
    lras_initiator_port: int | None = None
    placements: dict[int, int] = Field(default_factory=dict, description="port -> placement (0 = first)")
    winner_port: int | None = None
    winner_rule: str | None = Field(default=None, description="lras | placement | stocks | None")
    players: list[PlayerMeta]
    position_abs_max: float | None = Field(default=None, description="max |x|, |y| of any leader, post")
    shield_min: float | None = None
    shield_max: float | None = None
    cleaned_values: dict[str, int] = Field(default_factory=dict, description="column -> values nulled")
    flagged_values: dict[str, int] = Field(
        default_factory=dict, description="column -> values kept but out of range"
    )


class ParseFailure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    error_class: str
    message: str


class ParseSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    files: int = 0
    parsed: int = Field(default=0, description="files parsed in this run")
    unchanged: int = Field(
        default=0,
        description="files not parsed again: the ledger already answers for them, or their md5 is parsed",
    )
    failed: int = 0
    skipped: int = 0
    frames: int = Field(default=0, description="game frames written in this run")
    seconds: float = 0.0
    failures: list[ParseFailure] = Field(default_factory=list)

    def describe(self) -> str:
        lines = [
            f"source {self.source!r}: {self.files} files; parsed {self.parsed} ({self.frames:,} frames), "
            f"unchanged {self.unchanged}, failed {self.failed}, skipped {self.skipped} "
            f"in {self.seconds:.1f}s"
        ]
        lines += [f"  FAILED {f.path}: {f.error_class}: {f.message}" for f in self.failures]
        return "\n".join(lines)


class ReplayReadError(Exception):
    """peppi could read the file but its content breaks a promise the games files make."""


# ---------------------------------------------------------------------------------------------
# One replay
# ---------------------------------------------------------------------------------------------
def _port_number(port_name: str) -> int:
    return PORT_NAMES.index(port_name) + 1


def _version_string(start: dict) -> str:
    return ".".join(str(part) for part in start["slippi"]["version"])


def _ascii_code(code: str | None) -> str | None:
    # Game start stores connect codes with a full-width '＃'; the file metadata uses '#'.
    return code.replace("\uff03", "#") if code else code


def _flatten(
    array: pa.StructArray, prefix: str = "", leaves: dict[str, pa.Array] | None = None
) -> dict[str, pa.Array]:
    """Leaf arrays named by their '.'-joined path; a null parent makes its children null."""
    leaves = {} if leaves is None else leaves
    for field, child in zip(array.type, array.flatten(), strict=True):
        if isinstance(child, pa.StructArray):
            _flatten(child, f"{prefix}{field.name}.", leaves)
        else:
            leaves[prefix + field.name] = child
    return leaves


def _rollback_keep_indices(frame_ids: np.ndarray) -> np.ndarray | None:
    """Row indices that keep the LAST row per frame id, ordered by frame id; None when no rollback."""
    if frame_ids.size == 0 or bool(np.all(np.diff(frame_ids) == 1)):
        return None
    _, first_in_reversed = np.unique(frame_ids[::-1], return_index=True)
    return frame_ids.size - 1 - first_in_reversed


def _conform_columns(
    present: dict[str, pa.Array], rows: int, port_roles: set[tuple[str, str]]
) -> tuple[list[str], list[pa.Array]]:
    """Canonical column order: frame, the occupied ports (leader, then follower where peppi reports
    one; every column, null where the replay is too old), the frame-level columns peppi returned
    (older replays have fewer), then any column peppi returned that the canonical set does not know
    (kept, so a newer peppi never loses data). ``port_roles``: the (port, role) pairs peppi returned.
    """
    canonical = [
        column
        for port in PORT_NAMES
        for role in ROLES
        if (port, role) in port_roles
        for column in _PORT_ROLE_COLUMNS[port, role]
    ]
    canonical += [(name, kind) for name, kind in FRAME_COLUMNS if name in present]
    names: list[str] = ["frame"]
    columns: list[Any] = [present.pop("id")]
    nulls: dict[pa.DataType, pa.Array] = {}  # arrays are immutable: one all-null array per type
    for name, kind in canonical:
        column = present.pop(name, None)
        if column is None:
            column = nulls.get(kind)
            if column is None:
                column = nulls[kind] = pa.nulls(rows, kind)
        elif column.type != kind:
            column = column.cast(kind)  # list columns: adds fields older replays lack, as nulls
        names.append(name)
        columns.append(column)
    names += present
    columns += present.values()
    return names, columns


def _clean_and_flag(names: list[str], columns: list[Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Apply the garbage rules in place; return (cleaned, flagged) counts per column.

    Fast path, because nearly every replay is clean: all float32 columns concatenated once, ranged
    columns grouped by their range and contiguous, so one pass over that array shows whether any
    column holds NaN or +-inf, and one min/max of a group's slice shows the group in range;
    flagged columns are likewise checked with one max per (limit, type) group. Only the columns of
    a group that fails are masked value by value.
    """
    rows = len(columns[0]) if columns else 0
    float32_groups: dict[tuple[float, float] | None, list[int]] = {}
    suspects: list[int] = []  # floats the concatenation cannot hold (not float32): always checked
    for index, column in enumerate(columns):
        if isinstance(column, pa.FloatingPointArray) and column.null_count < rows:
            if isinstance(column, pa.FloatArray):  # float32
                float32_groups.setdefault(_CLEAN_RANGE_BY_COLUMN.get(names[index]), []).append(index)
            else:
                suspects.append(index)
    ordered = [index for group in float32_groups.values() for index in group]
    together = pa.concat_arrays([columns[index] for index in ordered]) if ordered else pa.array([], _F32)
    # Without nulls the concatenation is a plain numpy view, whose checks run several times faster
    # than Arrow's float min/max; with nulls, Arrow's kernels skip them.
    values = together.to_numpy() if together.null_count == 0 else None
    if values is not None:
        finite = bool(np.isfinite(values).all())
    else:
        total = pc.sum(together).as_py()
        finite = total is not None and bool(np.isfinite(total))
    if not finite:
        suspects += ordered
    else:
        offset = 0
        for bounds, group in float32_groups.items():
            length = rows * len(group)
            if bounds is not None:
                if values is not None:
                    low, high = values[offset : offset + length].min(), values[offset : offset + length].max()
                else:
                    extremes = pc.min_max(together.slice(offset, length)).as_py()
                    low, high = extremes["min"], extremes["max"]
                if low < bounds[0] or high > bounds[1]:
                    suspects += group
            offset += length
    cleaned: dict[str, int] = {}
    for index in suspects:
        column, bounds = columns[index], _CLEAN_RANGE_BY_COLUMN.get(names[index])
        valid = pc.is_finite(column)
        if bounds is not None:
            in_range = pc.and_(pc.greater_equal(column, bounds[0]), pc.less_equal(column, bounds[1]))
            valid = pc.and_(valid, in_range)
        bad = int(pc.sum(pc.invert(valid)).as_py() or 0)
        if bad:
            columns[index] = pc.if_else(valid, column, pa.scalar(None, column.type))
            cleaned[names[index]] = bad
    flag_groups: dict[tuple[float, pa.DataType], list[int]] = {}
    for index, name in enumerate(names):
        limit = _FLAG_LIMIT_BY_COLUMN.get(name)
        if limit is not None and columns[index].null_count < rows:
            flag_groups.setdefault((limit, columns[index].type), []).append(index)
    flagged: dict[str, int] = {}
    for (limit, _), group in flag_groups.items():
        if pc.max(pa.concat_arrays([columns[index] for index in group])).as_py() <= limit:
            continue
        for index in group:
            over = int(pc.sum(pc.greater(columns[index], limit)).as_py() or 0)
            if over:
                flagged[names[index]] = over
    return cleaned, flagged


def _decide_winner(
    start: dict, end: dict | None, last_stocks: dict[int, int | None], last_percent: dict[int, float | None]
) -> tuple[int | None, str | None]:
    """Winner port and the rule that decided it.

    1. LRAS: a no-contest with an initiator in a 2-player game is lost by the initiator (its
       placements are not a result: peppi's 3.18 test file gives the quitter placement 0).
    2. placement: the player placed 0 at game end (lowest port among a winning team).
    3. stocks: most stocks on the last frame, ties broken by lower percent; still tied -> None.
    """
    ports = [_port_number(player["port"]) for player in start["players"]]
    end = end or {}
    initiator = end.get("lras_initiator")
    if end.get("method") == "NoContest" and initiator is not None and len(ports) == 2:
        others = [port for port in ports if port != _port_number(initiator)]
        return others[0], "lras"
    winners = sorted(_port_number(p["port"]) for p in end.get("players") or [] if p["placement"] == 0)
    if winners and end.get("method") in ("Game", "Time", "Resolved"):
        return winners[0], "placement"
    ranked = [
        (-(last_stocks[port] or 0), last_percent[port] if last_percent[port] is not None else 1e9, port)
        for port in ports
        if last_stocks.get(port) is not None
    ]
    if len(ranked) >= 2:
        ranked.sort()
        if ranked[0][:2] != ranked[1][:2]:
            return ranked[0][2], "stocks"
    return None, None


def _game_meta(
    raw: Any,
    md5: str,
    size_bytes: int,
    columns: dict[str, pa.Array] | None,
    *,
    num_frame_rows: int | None = None,
    cleaned: dict[str, int] | None = None,
    flagged: dict[str, int] | None = None,
    not_parsed_reason: str | None = None,
) -> GameMeta:
    start, end, metadata = raw.start, raw.end, raw.metadata or {}
    match = start.get("match") or {}
    scene = start.get("scene") or {}
    parsed = columns is not None
    columns = columns or {}
    players, last_stocks, last_percent = [], {}, {}
    for player in start["players"]:
        port = _port_number(player["port"])
        prefix = f"ports.{player['port']}"
        netplay = player.get("netplay") or {}
        internal = None
        has_follower = f"{prefix}.follower.post.state" in columns
        if columns:
            internal = pc.first(columns[f"{prefix}.leader.post.character"]).as_py()
            last_stocks[port] = pc.last(columns[f"{prefix}.leader.post.stocks"]).as_py()
            last_percent[port] = pc.last(columns[f"{prefix}.leader.post.percent"]).as_py()
        else:
            # No frames: the file metadata counts frames per internal character; take the most played.
            seen = (metadata.get("players") or {}).get(str(port - 1), {}).get("characters") or {}
            internal = int(max(seen, key=seen.get)) if seen else None
        players.append(
            PlayerMeta(
                port=port,
                character=player.get("character"),
                character_internal=internal,
                type=str(player.get("type", "")).lower(),
                cpu_level=player.get("cpu_level"),
                costume=player.get("costume"),
                team=(player.get("team") or {}).get("color") if start.get("is_teams") else None,
                start_stocks=player.get("stocks"),
                netplay_name=netplay.get("name"),
                netplay_code=_ascii_code(netplay.get("code")),
                name_tag=player.get("name_tag") or None,
                has_follower=has_follower,
            )
        )
    winner_port, winner_rule = _decide_winner(start, end, last_stocks, last_percent)
    position_abs_max = shield_min = shield_max = None
    if columns:
        prefixes = [f"ports.{player['port']}.leader.post" for player in start["players"]]
        positions = [columns[f"{prefix}.position.{axis}"] for prefix in prefixes for axis in ("x", "y")]
        found = pc.min_max(pa.concat_arrays(positions)).as_py()
        if found["min"] is not None:
            position_abs_max = max(abs(found["min"]), abs(found["max"]))
        found = pc.min_max(pa.concat_arrays([columns[f"{prefix}.shield"] for prefix in prefixes])).as_py()
        shield_min, shield_max = found["min"], found["max"]
    frames = columns.get("frame")
    initiator = (end or {}).get("lras_initiator")
    return GameMeta(
        md5=md5,
        size_bytes=size_bytes,
        parsed=parsed,
        not_parsed_reason=not_parsed_reason,
        slippi_version=_version_string(start),
        start_time=metadata.get("startAt"),
        played_on=metadata.get("playedOn"),
        console_nick=metadata.get("consoleNick"),
        stage=start["stage"],
        is_teams=bool(start.get("is_teams")),
        is_pal=start.get("is_pal"),
        timer=start.get("timer"),
        scene_major=scene.get("major"),
        match_id=match.get("id") or None,
        game_number=match.get("game"),
        tiebreaker_number=match.get("tiebreaker"),
        num_frames=None if frames is None else len(frames),
        num_frame_rows=num_frame_rows,
        rollback_rows_dropped=None if frames is None else num_frame_rows - len(frames),
        first_frame=None if frames is None or not len(frames) else frames[0].as_py(),
        last_frame=None if frames is None or not len(frames) else frames[len(frames) - 1].as_py(),
        end_method=(end or {}).get("method"),
        lras_initiator_port=_port_number(initiator) if initiator else None,
        placements={_port_number(p["port"]): p["placement"] for p in (end or {}).get("players") or []},
        winner_port=winner_port,
        winner_rule=winner_rule,
        players=players,
        position_abs_max=position_abs_max,
        shield_min=shield_min,
        shield_max=shield_max,
        cleaned_values=cleaned or {},
        flagged_values=flagged or {},
    )


def read_replay(path: str | os.PathLike[str], md5: str, size_bytes: int) -> tuple[pa.Table, GameMeta]:
    """Parse one replay into the games-file table (metadata attached) and its ``GameMeta``."""
    from peppi_py import _peppi

    raw = _peppi.read_slippi(str(path), False)
    frames = raw.frames
    frame_ids = frames.field("id").to_numpy()
    keep = _rollback_keep_indices(frame_ids)
    if keep is not None:
        frames = frames.take(keep)
        kept_ids = frame_ids[keep]
        if kept_ids.size and not bool(np.all(np.diff(kept_ids) == 1)):
            gaps = int(np.count_nonzero(np.diff(kept_ids) != 1))
            raise ReplayReadError(f"{path}: frame ids skip {gaps} times after rollback resolution")
    port_roles = {(port.name, role.name) for port in frames.type["ports"].type for role in port.type}
    names, columns = _conform_columns(_flatten(frames), len(frames), port_roles)
    cleaned, flagged = _clean_and_flag(names, columns)
    meta = _game_meta(
        raw,
        md5,
        size_bytes,
        dict(zip(names, columns, strict=True)),
        num_frame_rows=len(frame_ids),
        cleaned=cleaned,
        flagged=flagged,
    )
    # A column without nulls is written as a REQUIRED parquet field: the writer then encodes no
    # definition levels for it, ~15% of the write, the dominant cost of a parse.
    fields = [
        pa.field(name, column.type, nullable=column.null_count > 0)
        for name, column in zip(names, columns, strict=True)
    ]
    schema = pa.schema(fields, metadata={METADATA_KEY: meta.model_dump_json().encode()})
    return pa.Table.from_arrays(columns, schema=schema), meta


def write_games_file(table: pa.Table, target: Path) -> None:
    """Encode in memory, then one atomic create-write-rename: games files are small and many."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    write_new_bytes_atomic(target, sink.getvalue())


def read_replay_meta(path: str | os.PathLike[str], md5: str, size_bytes: int, reason: str) -> GameMeta:
    """Metadata only (``skip_frames``), for replays whose frames peppi cannot read."""
    from peppi_py import _peppi

    raw = _peppi.read_slippi(str(path), True)
    return _game_meta(raw, md5, size_bytes, None, not_parsed_reason=reason)


def describe_replay(path: str | os.PathLike[str]) -> tuple[GameMeta | None, str | None]:
    """Metadata of one replay (frames read when peppi can, else ``skip_frames``), nothing written.
    Returns (meta, None), or (None, "<error class>: <message>") when not even the metadata reads."""
    data = Path(path).read_bytes()
    md5, size = md5_bytes(data), len(data)
    try:
        return read_replay(path, md5, size)[1], None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - peppi panics raise PanicException(BaseException)
        reason = ": ".join(_error_fields(error))
    try:
        return read_replay_meta(path, md5, size, reason), None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001
        meta_reason = ": ".join(_error_fields(error))
        return None, reason if meta_reason == reason else f"{reason}; metadata only: {meta_reason}"


def game_file_meta(path: Path) -> GameMeta | None:
    """The metadata stored in a games file, or None when the file is missing or unreadable."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        return GameMeta.model_validate_json(metadata[METADATA_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def read_game(root: DataRoot, md5: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """One parsed game as a polars DataFrame (optionally only some columns)."""
    return pl.read_parquet(root.game_path(md5), columns=list(columns) if columns else None)


# ---------------------------------------------------------------------------------------------
# Worker side: one file -> one small result dict (the games file is written here)
# ---------------------------------------------------------------------------------------------
def _error_fields(error: BaseException) -> tuple[str, str]:
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return type(error).__name__, message


def parse_one(path: str, games_dir: str, force: bool) -> dict[str, Any]:
    """Parse one file; never raises except for KeyboardInterrupt/SystemExit."""
    started = time.perf_counter()
    result: dict[str, Any] = {
        "path": path,
        "md5": None,
        "size_bytes": None,
        "mtime_ns": None,
        "status": "failed",
        "error_class": None,
        "error": None,
        "parsed": False,
        "meta_json": None,
        "num_frames": None,
        "newly_parsed": False,
    }
    try:
        stat = os.stat(path)
        result["size_bytes"], result["mtime_ns"] = stat.st_size, stat.st_mtime_ns
        if stat.st_size == 0:
            result.update(status="skipped", error_class="EmptyFile", error="file is empty (0 bytes)")
            return result
        with open(path, "rb") as handle:
            md5 = md5_bytes(handle.read())
        result["md5"] = md5
        target = Path(games_dir) / f"{md5}.parquet"
        if not force and target.exists():
            existing = game_file_meta(target)
            if existing is not None and existing.parser_version == PARSER_VERSION:
                result.update(
                    status="ok",
                    parsed=True,
                    meta_json=existing.model_dump_json(),
                    num_frames=existing.num_frames,
                )
                return result
        try:
            table, meta = read_replay(path, md5, stat.st_size)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # noqa: BLE001 - peppi panics raise PanicException(BaseException)
            error_class, message = _error_fields(error)
            result.update(error_class=error_class, error=message)
            try:
                meta = read_replay_meta(path, md5, stat.st_size, f"{error_class}: {message}")
                result["meta_json"] = meta.model_dump_json()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # noqa: BLE001 - the metadata is a bonus; the failure is recorded
                pass
            return result
        write_games_file(table, target)
        result.update(
            status="ok",
            parsed=True,
            meta_json=table.schema.metadata[METADATA_KEY].decode(),  # serialised once, in read_replay
            num_frames=meta.num_frames,
            newly_parsed=True,
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - I/O errors on one file must not end the batch
        result["error_class"], result["error"] = _error_fields(error)
    finally:
        result["parse_seconds"] = time.perf_counter() - started
    return result


def worker_main(task_fd: int, result_fd: int) -> None:
    """Entry point of a worker process: parse the paths it is sent until told to stop."""
    from multiprocessing.connection import Connection

    tasks, results = Connection(task_fd, writable=False), Connection(result_fd, readable=False)
    while True:
        try:
            task = tasks.recv()
        except EOFError:
            return
        if task is None:
            return
        results.send(parse_one(*task))


# ---------------------------------------------------------------------------------------------
# Ledger
# ---------------------------------------------------------------------------------------------
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String,
    "path": pl.String,
    "md5": pl.String,
    "size_bytes": pl.Int64,
    "mtime_ns": pl.Int64,
    "status": pl.String,
    "error_class": pl.String,
    "error": pl.String,
    "parser_version": pl.String,
    "parsed": pl.Boolean,
    "num_frames": pl.Int64,
    "meta_json": pl.String,
    "parse_seconds": pl.Float64,
    "updated_at": pl.String,
}
LEDGER_STATUSES = ("ok", "failed", "skipped")
# Failures that say nothing about the file itself: retried by the next run.
TRANSIENT_ERRORS = frozenset({"Timeout", "WorkerCrashed"})
DEFAULT_LEDGER_FLUSH_S = 5.0
# Saving a large ledger takes time of its own; never spend more than a tenth of the run on it.
LEDGER_FLUSH_COST_FACTOR = 10.0


def read_ledger(root: DataRoot) -> pl.DataFrame:
    if not root.ledger_path.exists():
        return pl.DataFrame(schema=LEDGER_SCHEMA)
    return pl.read_parquet(root.ledger_path)


def _write_ledger(root: DataRoot, rows: dict[tuple[str, str], dict[str, Any]]) -> None:
    ordered = [rows[key] for key in sorted(rows)]
    frame = pl.DataFrame(ordered, schema=LEDGER_SCHEMA) if ordered else pl.DataFrame(schema=LEDGER_SCHEMA)
    with atomic_path(root.ledger_path) as tmp:
        frame.write_parquet(tmp, compression="zstd")


# ---------------------------------------------------------------------------------------------
# Inputs: files, folders, archives
# ---------------------------------------------------------------------------------------------
ARCHIVE_SUFFIXES = (".zip", ".7z")


def collect_replays(paths: Iterable[str | os.PathLike[str]], root: DataRoot, source: str) -> list[Path]:
    """Expand files, folders (recursive) and archives (extracted under raw/<source>/extracted) into
    a sorted, de-duplicated list of .slp files. A path that does not exist raises."""
    from meleewm_core.archives import extract_archive

    found: set[Path] = set()
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob("*") if p.suffix.lower() == ".slp" and p.is_file())
        elif path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
            destination = root.source_extracted_dir(source) / path.stem
            summary = extract_archive(path, destination)
            found.update(Path(p).resolve() for p in summary.files)
        elif path.is_file():
            found.add(path.resolve())
        else:
            raise FileNotFoundError(f"no such replay file, folder or archive: {path}")
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------------
@dataclass
class _Worker:
    process: subprocess.Popen
    tasks: Any
    results: Any
    task: tuple[str, str, bool] | None = None
    started: float = 0.0


class _WorkerPool:
    """Long-lived worker processes, one task each at a time, so that a task that hangs or kills
    its process costs that task only: the worker is replaced and the batch goes on.

    Workers are fresh interpreters (not forks): forking a process that runs polars/arrow thread
    pools can deadlock, and multiprocessing's spawn would re-run the caller's main script.
    """

    def __init__(self, size: int) -> None:
        self.workers = [self._start() for _ in range(size)]

    @staticmethod
    def _start() -> _Worker:
        from multiprocessing.connection import Connection

        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        package_parent = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, RUST_BACKTRACE="0")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from meleewm_core.parse import worker_main; worker_main({task_read}, {result_write})",
            ],
            pass_fds=(task_read, result_write),
            env=env,
            stdin=subprocess.DEVNULL,
            # peppi prints every Rust panic to stderr; the ledger row already carries its message.
            stderr=subprocess.DEVNULL,
        )
        os.close(task_read)
        os.close(result_write)
        return _Worker(
            process, Connection(task_write, readable=False), Connection(result_read, writable=False)
        )

    def replace(self, worker: _Worker) -> None:
        self._stop(worker, kill=True)
        self.workers[self.workers.index(worker)] = self._start()

    @staticmethod
    def _stop(worker: _Worker, *, kill: bool) -> None:
        if not kill:
            try:
                worker.tasks.send(None)
            except OSError:
                kill = True
        try:
            worker.process.wait(timeout=0 if kill else 2)
        except subprocess.TimeoutExpired:
            kill = True
        if kill and worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
        worker.tasks.close()
        worker.results.close()

    def close(self) -> None:
        for worker in self.workers:
            self._stop(worker, kill=worker.task is not None)


def _failed_result(path: str, error_class: str, message: str) -> dict[str, Any]:
    return {
        "path": path,
        "md5": None,
        "size_bytes": None,
        "mtime_ns": None,
        "status": "failed",
        "error_class": error_class,
        "error": message,
        "parsed": False,
        "meta_json": None,
        "num_frames": None,
        "newly_parsed": False,
        "parse_seconds": None,
    }


def _run_tasks(tasks: list[tuple[str, str, bool]], workers: int, timeout_s: float):
    """Yield one result dict per task, in completion order."""
    from multiprocessing.connection import wait

    pool = _WorkerPool(min(workers, len(tasks)))
    pending = list(reversed(tasks))
    try:
        while pending or any(w.task for w in pool.workers):
            for worker in pool.workers:
                if worker.task is None and pending:
                    worker.task = pending.pop()
                    worker.started = time.monotonic()
                    worker.tasks.send(worker.task)
            busy = [w for w in pool.workers if w.task is not None]
            deadline = min(w.started for w in busy) + timeout_s
            ready = wait([w.results for w in busy], timeout=max(0.0, deadline - time.monotonic()))
            for worker in busy:
                path = worker.task[0]
                if worker.results in ready:
                    try:
                        result = worker.results.recv()
                    except (EOFError, OSError):
                        code = worker.process.wait()
                        worker.task = None
                        pool.replace(worker)
                        yield _failed_result(path, "WorkerCrashed", f"worker process died (exit code {code})")
                        continue
                    worker.task = None
                    yield result
                elif time.monotonic() - worker.started >= timeout_s:
                    worker.task = None
                    pool.replace(worker)
                    yield _failed_result(path, "Timeout", f"no result after {timeout_s:g}s; worker killed")
    finally:
        pool.close()


def _row(source: str, result: dict[str, Any], now: str) -> dict[str, Any]:
    return {
        "source": source,
        "path": result["path"],
        "md5": result["md5"],
        "size_bytes": result["size_bytes"],
        "mtime_ns": result["mtime_ns"],
        "status": result["status"],
        "error_class": result["error_class"],
        "error": result["error"],
        "parser_version": PARSER_VERSION,
        "parsed": result["parsed"],
        "num_frames": result["num_frames"],
        "meta_json": result["meta_json"],
        "parse_seconds": result.get("parse_seconds"),
        "updated_at": now,
    }


def _is_done(row: dict[str, Any] | None, path: Path, root: DataRoot) -> bool:
    """True when the ledger already holds this file's final answer under this parser version."""
    if row is None or row["parser_version"] != PARSER_VERSION:
        return False
    try:
        stat = path.stat()
    except OSError:
        return False
    if (row["size_bytes"], row["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns):
        return False
    if row["status"] == "ok":
        return root.game_path(row["md5"]).exists()
    return row["error_class"] not in TRANSIENT_ERRORS


def parse_paths(
    paths: Iterable[str | os.PathLike[str]],
    root: DataRoot,
    *,
    source: str,
    workers: int | None = None,
    force: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ledger_flush_s: float = DEFAULT_LEDGER_FLUSH_S,
    progress: bool = True,
) -> ParseSummary:
    """Parse every replay under ``paths`` into ``root``; record every file in the ledger.

    Skips files the ledger already answers for (same size and mtime, same parser version, games
    file present) and files whose md5 is already parsed (another path or source, or a run killed
    before its ledger flush). ``force`` parses everything again. The ledger is saved atomically
    every ``ledger_flush_s`` seconds (longer when saving it is slow) and at the end, also when
    interrupted, so a killed run loses at most that much bookkeeping and no parsed game.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    root.ensure()
    remove_stale_temp_files(root.games_dir)
    remove_stale_temp_files(root.root)
    files = collect_replays(paths, root, source)
    ledger = {(row["source"], row["path"]): row for row in read_ledger(root).iter_rows(named=True)}
    summary = ParseSummary(source=source, files=len(files))
    tasks = []
    for path in files:
        if not force and _is_done(ledger.get((source, str(path))), path, root):
            summary.unchanged += 1
        else:
            tasks.append((str(path), str(root.games_dir), force))
    workers = max(1, workers or os.cpu_count() or 1)
    last_flush = time.monotonic()
    flush_interval_s = ledger_flush_s
    dirty = False
    try:
        if tasks:
            bar = tqdm(total=len(tasks), desc=f"parse {source}", unit="file", disable=not progress)
            for result in _run_tasks(tasks, workers, timeout_s):
                bar.update()
                now = datetime.now(timezone.utc).isoformat(timespec="seconds")
                ledger[(source, result["path"])] = _row(source, result, now)
                dirty = True
                if result["status"] == "ok":
                    if result["newly_parsed"]:
                        summary.parsed += 1
                        summary.frames += result["num_frames"] or 0
                    else:
                        summary.unchanged += 1
                elif result["status"] == "skipped":
                    summary.skipped += 1
                else:
                    summary.failed += 1
                    summary.failures.append(
                        ParseFailure(
                            path=result["path"], error_class=result["error_class"], message=result["error"]
                        )
                    )
                if time.monotonic() - last_flush >= flush_interval_s:
                    flush_started = time.monotonic()
                    _write_ledger(root, ledger)
                    last_flush, dirty = time.monotonic(), False
                    flush_interval_s = max(
                        ledger_flush_s, LEDGER_FLUSH_COST_FACTOR * (last_flush - flush_started)
                    )
            bar.close()
    finally:
        if dirty or not root.ledger_path.exists():
            _write_ledger(root, ledger)
    summary.seconds = time.perf_counter() - started
    return summary
