"""Which games fed a checkpoint, and which checkpoints a game fed.

A training run's ``manifest.json`` lists the MD5 of every game it trained and validated on; the
ledger maps each MD5 to the source and file (one game can come from several sources: a duplicate
is one game with two sources). Both questions are answered from those two files alone, so they
work without Dagster and on a copy of the data root.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from meleewm_core.store import DataRoot

Role = Literal["train", "val", "used"]
RUN_MANIFEST = "manifest.json"


class LineageError(ValueError):
    """A run folder or its manifest is missing or unreadable; the message names the file."""


class GameLocation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    path: str


class GameOrigin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    md5: str
    role: Role
    sources: list[str]
    locations: list[GameLocation]


class RunLineage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    experiment: str | None
    run_id: str | None
    data_fingerprint: str | None
    games: list[GameOrigin]
    sources: dict[str, int]
    """Source name -> number of the run's games found in it."""
    unknown_games: int
    """Games of the run the ledger does not know (parsed in another data root, or ledger lost)."""


class RunUse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    experiment: str | None
    run_id: str | None
    role: Role


def read_run_manifest(run_dir: str | os.PathLike[str]) -> dict:
    path = Path(run_dir) / RUN_MANIFEST
    if not path.is_file():
        raise LineageError(
            f"no run manifest at {path}: is {run_dir} a run folder (runs/<experiment>/<run-id>/)?"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LineageError(f"{path}: not valid JSON: {error}") from error


def games_by_role(manifest: dict) -> dict[str, Role]:
    """MD5 -> role from the run manifest's ``game_md5s``: ``{"train": [...], "val": [...]}``, or a
    flat list (role "used") as the reference implementation wrote it."""
    recorded = manifest.get("game_md5s") or {}
    if isinstance(recorded, list):
        return {md5: "used" for md5 in recorded}
    roles: dict[str, Role] = {}
    for role in ("train", "val"):
        for md5 in recorded.get(role, []):
            roles[md5] = role
    return roles


def _locations(root: DataRoot) -> dict[str, list[GameLocation]]:
    """MD5 -> every (source, file) the ledger saw it at."""
    from meleewm_core.parse import read_ledger

    locations: dict[str, list[GameLocation]] = {}
    ledger = read_ledger(root)
    for row in (
        ledger.filter(ledger["md5"].is_not_null()).select("md5", "source", "path").iter_rows(named=True)
    ):
        locations.setdefault(row["md5"], []).append(GameLocation(source=row["source"], path=row["path"]))
    return locations


def _data_root_of(run_dir: Path, manifest: dict, root: DataRoot | None) -> DataRoot:
    if root is not None:
        return root
    if manifest.get("data_root"):
        return DataRoot(Path(manifest["data_root"]))
    # runs/<experiment>/<run-id>/ sits three levels under the data root.
    return DataRoot(run_dir.resolve().parents[2])


def run_lineage(run_dir: str | os.PathLike[str], root: DataRoot | None = None) -> RunLineage:
    """The games (md5, role, sources, files) and the per-source counts behind one training run."""
    run_dir = Path(run_dir)
    manifest = read_run_manifest(run_dir)
    locations = _locations(_data_root_of(run_dir, manifest, root))
    games, per_source, unknown = [], Counter(), 0
    for md5, role in sorted(games_by_role(manifest).items()):
        found = locations.get(md5, [])
        sources = sorted({location.source for location in found})
        unknown += not sources
        per_source.update(sources)
        games.append(GameOrigin(md5=md5, role=role, sources=sources, locations=found))
    return RunLineage(
        run_dir=run_dir,
        experiment=manifest.get("experiment") or manifest.get("config", {}).get("name"),
        run_id=manifest.get("run_id"),
        data_fingerprint=manifest.get("data_fingerprint"),
        games=games,
        sources=dict(per_source),
        unknown_games=unknown,
    )


def game_lineage(md5: str, root: DataRoot) -> list[RunUse]:
    """Every run under ``root/runs`` that trained or validated on the game ``md5``."""
    uses = []
    for manifest_path in sorted(root.runs_dir.glob(f"*/*/{RUN_MANIFEST}")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            continue  # a run being written right now; its manifest lands atomically later
        role = games_by_role(manifest).get(md5)
        if role:
            uses.append(
                RunUse(
                    run_dir=manifest_path.parent,
                    experiment=manifest.get("experiment") or manifest_path.parent.parent.name,
                    run_id=manifest.get("run_id") or manifest_path.parent.name,
                    role=role,
                )
            )
    return uses
