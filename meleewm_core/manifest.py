"""The de-duplicated game table, built from the ledger alone (no games file is opened).

One row per unique replay (md5). The same file found under several sources or paths is one row
listing them all. The same netplay match saved by both players (same non-empty match id, game
number and tiebreaker, different bytes) keeps one row as the game; the others stay in the table
with ``duplicate_of`` set and ``eligible`` false, so nothing disappears silently.

Training eligibility (every failing rule is listed in ``ineligible_reason``, joined by "; "):
parsed; not a duplicate; exactly 2 players; not teams; both human; at least one minute
(3,600 frames); versus mode (Slippi scene 2 or 8 where the replay records it); a versus stage;
playable characters; sane values (|x|, |y| <= 500 and shield within [0, 60]).

Writes ``meta.json`` (a JSON array, one object per row) and ``manifest.parquet`` atomically.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from meleewm_core.parse import (
    PLAYABLE_CHARACTERS,
    VERSUS_SCENES,
    VERSUS_STAGES,
    GameMeta,
    character_name,
    read_ledger,
    stage_name,
)
from meleewm_core.store import DataRoot, atomic_path, write_json_atomic

MIN_FRAMES = 60 * 60  # one minute at 60 frames per second
POSITION_ABS_LIMIT = 500.0
SHIELD_RANGE = (0.0, 60.0)


class ManifestSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    games: int = Field(description="unique games (rows that are not a netplay duplicate)")
    rows: int
    eligible: int
    eligible_frames: int
    duplicates: int
    not_parsed: int = Field(description="games whose frames could not be read (metadata only)")
    ledger_files: int
    failed_files: int
    by_stage: dict[str, int] = Field(description="stage name -> eligible games")
    by_character: dict[str, int] = Field(description="character name -> eligible player slots")
    ineligible_reasons: dict[str, int]
    failures_by_cause: dict[str, int] = Field(description="ledger error class: message -> files")

    def describe(self) -> str:
        def block(title: str, counts: dict[str, int]) -> list[str]:
            return (
                [f"{title}:"] + [f"  {count:5d}  {name}" for name, count in counts.items()] if counts else []
            )

        lines = [
            f"{self.games} unique games ({self.rows} rows, {self.duplicates} netplay duplicates, "
            f"{self.not_parsed} not parsed); {self.eligible} eligible for training "
            f"({self.eligible_frames:,} frames)",
            f"ledger: {self.ledger_files} files, {self.failed_files} failed",
        ]
        lines += block("eligible games by stage", self.by_stage)
        lines += block("eligible player slots by character", self.by_character)
        lines += block("ineligible games by reason", self.ineligible_reasons)
        lines += block("failed files by cause", self.failures_by_cause)
        return "\n".join(lines)


def ineligible_reasons(meta: GameMeta) -> list[str]:
    """Every training-eligibility rule this game breaks, each as "<rule>: <detail>" (empty: eligible)."""
    if not meta.parsed:
        return [f"not parsed: {meta.not_parsed_reason}"]
    reasons = []
    if len(meta.players) != 2:
        reasons.append(f"player count: {len(meta.players)} (need 2)")
    if meta.is_teams:
        reasons.append("teams: teams game")
    reasons += [f"not human: port {p.port} is {p.type}" for p in meta.players if p.type != "human"]
    if (meta.num_frames or 0) < MIN_FRAMES:
        reasons.append(f"too short: {meta.num_frames} frames (< {MIN_FRAMES})")
    if meta.scene_major is not None and meta.scene_major not in VERSUS_SCENES:
        reasons.append(f"not versus mode: scene {meta.scene_major}")
    if meta.stage not in VERSUS_STAGES:
        reasons.append(f"unknown stage: {meta.stage}")
    reasons += [
        f"unknown character: {p.character} on port {p.port}"
        for p in meta.players
        if p.character not in PLAYABLE_CHARACTERS
    ]
    if meta.position_abs_max is None or meta.position_abs_max > POSITION_ABS_LIMIT:
        reasons.append(
            f"insane position: |x| or |y| reaches {meta.position_abs_max} (> {POSITION_ABS_LIMIT:g})"
        )
    if meta.shield_min is None or meta.shield_min < SHIELD_RANGE[0] or meta.shield_max > SHIELD_RANGE[1]:
        reasons.append(f"insane shield: {meta.shield_min}..{meta.shield_max} outside [0, 60]")
    return reasons


def _rule(reason: str) -> str:
    return reason.split(":", 1)[0]


def _choose_kept(group: list[dict[str, Any]]) -> dict[str, Any]:
    """Of the files of one netplay match: the parsed one, then the longer, then the lowest md5."""
    return min(group, key=lambda r: (not r["parsed"], -(r["num_frames"] or 0), r["md5"]))


def manifest_rows(ledger: pl.DataFrame) -> list[dict[str, Any]]:
    """One row per unique md5 that has metadata, duplicates marked, eligibility decided."""
    by_md5: dict[str, dict[str, Any]] = {}
    for entry in ledger.filter(pl.col("md5").is_not_null() & pl.col("meta_json").is_not_null()).iter_rows(
        named=True
    ):
        row = by_md5.get(entry["md5"])
        if row is None:
            meta = GameMeta.model_validate_json(entry["meta_json"])
            row = by_md5[entry["md5"]] = {"meta": meta, "sources": set(), "paths": set()}
        elif entry["parsed"] and not row["meta"].parsed:
            row["meta"] = GameMeta.model_validate_json(entry["meta_json"])
        row["sources"].add(entry["source"])
        row["paths"].add(entry["path"])

    rows = []
    for md5, found in sorted(by_md5.items()):
        meta: GameMeta = found["meta"]
        rows.append(
            {
                "md5": md5,
                "sources": sorted(found["sources"]),
                "paths": sorted(found["paths"]),
                "parsed": meta.parsed,
                "num_frames": meta.num_frames,
                "stage": meta.stage,
                "stage_name": stage_name(meta.stage),
                "players": [p.model_dump() for p in meta.players],
                "characters": [p.character for p in meta.players],
                "eligible": False,
                "ineligible_reason": None,
                "duplicate_md5s": [],
                "duplicate_of": None,
                "slippi_version": meta.slippi_version,
                "start_time": meta.start_time,
                "match_id": meta.match_id,
                "game_number": meta.game_number,
                "tiebreaker_number": meta.tiebreaker_number,
                "is_teams": meta.is_teams,
                "end_method": meta.end_method,
                "winner_port": meta.winner_port,
                "winner_rule": meta.winner_rule,
                "size_bytes": meta.size_bytes,
                "position_abs_max": meta.position_abs_max,
                "shield_min": meta.shield_min,
                "shield_max": meta.shield_max,
                "parser_version": meta.parser_version,
                "_meta": meta,
            }
        )

    matches: dict[tuple[str, int | None, int | None], list[dict[str, Any]]] = {}
    for row in rows:
        if row["match_id"]:
            matches.setdefault((row["match_id"], row["game_number"], row["tiebreaker_number"]), []).append(
                row
            )
    for group in matches.values():
        if len(group) < 2:
            continue
        kept = _choose_kept(group)
        kept["duplicate_md5s"] = sorted(r["md5"] for r in group if r is not kept)
        for row in group:
            if row is not kept:
                row["duplicate_of"] = kept["md5"]

    for row in rows:
        meta = row.pop("_meta")
        reasons = [f"duplicate: of {row['duplicate_of']} (same netplay match)"] if row["duplicate_of"] else []
        reasons += ineligible_reasons(meta)
        row["eligible"] = not reasons
        row["ineligible_reason"] = "; ".join(reasons) or None
    return rows


_PLAYER_SCHEMA = pl.Struct(
    {
        "port": pl.Int64,
        "character": pl.Int64,
        "character_internal": pl.Int64,
        "type": pl.String,
        "cpu_level": pl.Int64,
        "costume": pl.Int64,
        "team": pl.Int64,
        "start_stocks": pl.Int64,
        "netplay_name": pl.String,
        "netplay_code": pl.String,
        "name_tag": pl.String,
        "has_follower": pl.Boolean,
    }
)
MANIFEST_SCHEMA: dict[str, pl.DataType] = {
    "md5": pl.String,
    "sources": pl.List(pl.String),
    "paths": pl.List(pl.String),
    "parsed": pl.Boolean,
    "num_frames": pl.Int64,
    "stage": pl.Int64,
    "stage_name": pl.String,
    "players": pl.List(_PLAYER_SCHEMA),
    "characters": pl.List(pl.Int64),
    "eligible": pl.Boolean,
    "ineligible_reason": pl.String,
    "duplicate_md5s": pl.List(pl.String),
    "duplicate_of": pl.String,
    "slippi_version": pl.String,
    "start_time": pl.String,
    "match_id": pl.String,
    "game_number": pl.Int64,
    "tiebreaker_number": pl.Int64,
    "is_teams": pl.Boolean,
    "end_method": pl.String,
    "winner_port": pl.Int64,
    "winner_rule": pl.String,
    "size_bytes": pl.Int64,
    "position_abs_max": pl.Float64,
    "shield_min": pl.Float64,
    "shield_max": pl.Float64,
    "parser_version": pl.String,
}


def build_manifest(root: DataRoot) -> ManifestSummary:
    """Build ``meta.json`` and ``manifest.parquet`` from the ledger; return the counts."""
    ledger = read_ledger(root)
    rows = manifest_rows(ledger)
    frame = pl.DataFrame(rows, schema=MANIFEST_SCHEMA) if rows else pl.DataFrame(schema=MANIFEST_SCHEMA)
    root.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root.meta_json_path, rows)
    with atomic_path(root.manifest_path) as tmp:
        frame.write_parquet(tmp, compression="zstd")
    return summarize(rows, ledger)


def summarize(rows: list[dict[str, Any]], ledger: pl.DataFrame) -> ManifestSummary:
    eligible = [r for r in rows if r["eligible"]]
    stages = Counter(r["stage_name"] for r in eligible)
    characters = Counter(character_name(c) for r in eligible for c in r["characters"])
    reasons = Counter(
        _rule(reason) for r in rows if not r["eligible"] for reason in r["ineligible_reason"].split("; ")
    )
    failed = ledger.filter(pl.col("status") == "failed")
    causes = Counter(f"{row['error_class']}: {row['error']}" for row in failed.iter_rows(named=True))
    return ManifestSummary(
        games=sum(1 for r in rows if not r["duplicate_of"]),
        rows=len(rows),
        eligible=len(eligible),
        eligible_frames=sum(r["num_frames"] or 0 for r in eligible),
        duplicates=sum(1 for r in rows if r["duplicate_of"]),
        not_parsed=sum(1 for r in rows if not r["parsed"]),
        ledger_files=ledger.height,
        failed_files=failed.height,
        by_stage=dict(stages.most_common()),
        by_character=dict(characters.most_common()),
        ineligible_reasons=dict(reasons.most_common()),
        failures_by_cause=dict(causes.most_common()),
    )


def read_manifest(root: DataRoot) -> pl.DataFrame:
    if not root.manifest_path.exists():
        raise FileNotFoundError(
            f"no manifest at {root.manifest_path}: run `meleewm manifest --data {root.root}`"
        )
    return pl.read_parquet(root.manifest_path)
