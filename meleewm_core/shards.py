"""Encoded tensor shards: the eligible games of the manifest as memory-mappable numpy arrays.

Layout under the data root::

    shards/<encoding-id>/
        index.json                   ShardIndex: games (md5, shard, offset, frames, split),
                                     encoding config, parser version, anomaly counts
        shard-00000.floats.npy       (frames, float_per_frame) float32
        shard-00000.ints.npy         (frames, int_per_frame) int16
        shard-00001.*                games added later: appending never rewrites older shards

The folder id hashes the encoding config and the parser version, so a change to either encodes
into a new folder. The game list is hashed into ``data_fingerprint`` (in the index and in every
run manifest) rather than into the folder name: a folder per game list would re-encode every game
each time one is added. A game's split is a pure function of its MD5 (``split_of``), so adding
games never moves an old game between train and validation.

Only ``encode_shards`` needs polars/pyarrow (it runs where the parsed games are); reading an
index and its arrays needs numpy and pydantic alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from meleewm_core.config import EncodingConfig, ExperimentConfig
from meleewm_core.encoding import (
    FLOAT_DTYPE,
    INT_DTYPE,
    AnomalyCounts,
    EncodingSpec,
    encode_game,
    merge_anomalies,
    required_columns,
)

INDEX_FORMAT = 1
INDEX_NAME = "index.json"
Split = Literal["train", "val"]


class ShardError(RuntimeError):
    """Shards are missing, stale or do not match the encoding; the message names the file."""


def split_of(md5: str, train_percent: int = 90) -> Split:
    """Train or validation, from the game's MD5 alone (stable as games are added)."""
    return "train" if int(md5[:8], 16) % 100 < train_percent else "val"


def data_fingerprint(md5s: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(md5s)).encode()).hexdigest()[:16]


def encoding_id(encoding: EncodingConfig, parser_version: str, selection: str = "eligible") -> str:
    payload = {"encoding": encoding.identity_dump(), "parser_version": parser_version}
    if selection != "eligible":
        payload["selection"] = selection
    return "v22-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardFile(_Model):
    name: str
    num_frames: int
    num_games: int


class GameEntry(_Model):
    md5: str
    shard: str
    offset: int  # first row of the game inside its shard
    num_frames: int
    split: Split
    anomalies: AnomalyCounts = {}


class ShardIndex(_Model):
    format: int = INDEX_FORMAT
    encoding_id: str
    encoding: EncodingConfig
    parser_version: str
    float_per_frame: int
    int_per_frame: int
    train_percent: int
    shards: list[ShardFile] = []
    games: list[GameEntry] = []
    anomalies: AnomalyCounts = {}
    # Eligible games that could not be encoded: md5 -> reason.
    skipped: dict[str, str] = {}
    updated_at: str = ""

    @property
    def num_frames(self) -> int:
        return sum(s.num_frames for s in self.shards)

    @property
    def data_fingerprint(self) -> str:
        return data_fingerprint(g.md5 for g in self.games)


class ShardSet(_Model):
    """What ``encode_shards`` made: the folder, its id and the games in each split."""

    path: Path
    encoding_id: str
    num_games: int
    num_frames: int
    train_md5s: list[str]
    val_md5s: list[str]
    data_fingerprint: str
    anomalies: AnomalyCounts
    new_games: int = 0
    new_shards: list[str] = []
    skipped: dict[str, str] = {}
    seconds: float = 0.0


def shard_dir(root, encoding: EncodingConfig, parser_version: str, selection: str = "eligible") -> Path:
    return Path(root.shards_dir) / encoding_id(encoding, parser_version, selection)


def read_index(folder: str | os.PathLike[str]) -> ShardIndex:
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise ShardError(f"no shard index at {path}: run `meleewm encode --config FILE` first")
    try:
        return ShardIndex.model_validate_json(path.read_text())
    except ValueError as error:
        raise ShardError(f"{path}: not a valid shard index: {error}") from error


def shard_arrays(folder: str | os.PathLike[str], shard: str, *, mmap: bool) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(folder)
    mode = "r" if mmap else None
    floats = np.load(folder / f"{shard}.floats.npy", mmap_mode=mode)
    ints = np.load(folder / f"{shard}.ints.npy", mmap_mode=mode)
    return floats, ints


def check_shard_shapes(folder: str | os.PathLike[str], index: ShardIndex, spec: EncodingSpec) -> None:
    """Fail unless every shard array has the shape and dtype this encoding expects."""
    flags = (
        f"state_age_as_embed={spec.config.state_age_as_embed}, press_events={spec.config.press_events}, "
        f"action_age_as_embed={spec.config.action_age_as_embed}"
    )
    for shard in index.shards:
        floats, ints = shard_arrays(folder, shard.name, mmap=True)
        for name, array, width, dtype in (
            ("floats", floats, spec.float_per_frame, FLOAT_DTYPE),
            ("ints", ints, spec.int_per_frame, INT_DTYPE),
        ):
            expected = (shard.num_frames, width)
            if array.shape != expected or array.dtype != dtype:
                raise ShardError(
                    f"{Path(folder) / f'{shard.name}.{name}.npy'}: shape {array.shape} {array.dtype}, "
                    f"expected {expected} {np.dtype(dtype)} for the encoding ({flags})"
                )


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    from meleewm_core.store import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def _selected_games(root, selection: str) -> list[tuple[str, tuple[int, int], int]]:
    """(md5, (port0, port1), stage) of the manifest's games, sorted by MD5: the eligible ones, or
    with ``selection="two_players"`` every parsed game of two players (CPU and short games too,
    as the reference trained on; for benchmarks against it, never mixed with eligible shards)."""
    from meleewm_core.manifest import read_manifest

    manifest = read_manifest(root)
    if selection == "eligible":
        chosen = manifest.filter(manifest["eligible"])
    elif selection == "two_players":
        chosen = manifest.filter(manifest["parsed"] & (manifest["players"].list.len() == 2))
    else:
        raise ValueError(f"unknown game selection {selection!r}; use eligible or two_players")
    games = []
    for row in chosen.sort("md5").iter_rows(named=True):
        ports = sorted(int(player["port"]) for player in row["players"])
        games.append((row["md5"], tuple(ports), int(row["stage"])))
    return games


def _read_game(root, md5: str, ports: tuple[int, ...]):
    import pyarrow.parquet as pq

    path = root.game_path(md5)
    if not path.is_file():
        raise ShardError(f"parsed game missing: {path} (listed eligible in the manifest)")
    present = set(pq.read_schema(path).names)
    wanted = ["frame"] + [c for port in ports for c in required_columns(port)]
    table = pq.read_table(path, columns=[c for c in wanted if c in present])
    return {name: table.column(name) for name in table.column_names}


def encode_shards(
    root,
    encoding: EncodingConfig,
    *,
    max_games: int | None = None,
    train_percent: int = 90,
    progress: bool = True,
    workers: int = 2,
    selection: str = "eligible",
    shard_frames: int = 4_000_000,
) -> ShardSet:
    """Encode the eligible games of the manifest not yet in the shard set into new shards.

    ``max_games`` caps the set at the first N eligible games by MD5 (already encoded ones count).
    A shard closes once it holds ``shard_frames`` frames (about 1 GB at the defaults), so
    streaming from memmaps needs one shard in RAM at a time. Re-running with nothing new only
    reads the index.
    """
    from tqdm import tqdm

    from meleewm_core.encoding import EncodingError
    from meleewm_core.parse import PARSER_VERSION
    from meleewm_core.store import remove_stale_temp_files, write_text_atomic

    started = time.perf_counter()
    spec = EncodingSpec(encoding)
    folder = shard_dir(root, encoding, PARSER_VERSION, selection)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder)
    if (folder / INDEX_NAME).is_file():
        index = read_index(folder)
    else:
        index = ShardIndex(
            encoding_id=folder.name,
            encoding=encoding,
            parser_version=PARSER_VERSION,
            float_per_frame=spec.float_per_frame,
            int_per_frame=spec.int_per_frame,
            train_percent=train_percent,
        )
    known = {g.md5 for g in index.games} | set(index.skipped)
    selected = _selected_games(root, selection)
    if max_games is not None:
        selected = selected[:max_games]
    todo = [game for game in selected if game[0] not in known]

    new_shards: list[str] = []
    new_games = 0

    def encode_one(game):
        md5, ports, stage = game
        if len(ports) != 2:
            return md5, None, f"{len(ports)} players; encoding v2.2 needs 2"
        try:
            return md5, encode_game(_read_game(root, md5, ports), ports, stage, spec, game=md5), None
        except EncodingError:
            raise
        except (OSError, ValueError, KeyError) as error:
            return md5, None, f"{type(error).__name__}: {error}"

    float_parts: list[np.ndarray] = []
    int_parts: list[np.ndarray] = []
    entries: list[GameEntry] = []

    def flush() -> None:
        """Write the games gathered so far as the next shard, then the index that lists it (last:
        a crash in between leaves an orphan shard file that the next run overwrites)."""
        nonlocal new_games
        if entries:
            name = entries[0].shard
            _save_npy_atomic(folder / f"{name}.floats.npy", np.concatenate(float_parts))
            _save_npy_atomic(folder / f"{name}.ints.npy", np.concatenate(int_parts))
            frames = sum(e.num_frames for e in entries)
            index.shards.append(ShardFile(name=name, num_frames=frames, num_games=len(entries)))
            index.games.extend(entries)
            new_shards.append(name)
            new_games += len(entries)
        index.updated_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_text_atomic(folder / INDEX_NAME, index.model_dump_json(indent=1))
        float_parts.clear()
        int_parts.clear()
        entries.clear()

    if todo:
        offset = 0
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(encode_one, todo)
            for md5, encoded, reason in tqdm(
                results, total=len(todo), desc=f"encode {folder.name}", unit="game", disable=not progress
            ):
                if encoded is None:
                    index.skipped[md5] = reason
                    continue
                if offset >= shard_frames:
                    flush()
                    offset = 0
                float_parts.append(encoded.floats)
                int_parts.append(encoded.ints)
                entries.append(
                    GameEntry(
                        md5=md5,
                        shard=f"shard-{len(index.shards):05d}",
                        offset=offset,
                        num_frames=len(encoded.floats),
                        split=split_of(md5, index.train_percent),
                        anomalies=encoded.anomalies,
                    )
                )
                merge_anomalies(index.anomalies, encoded.anomalies)
                offset += len(encoded.floats)
        flush()

    seconds = time.perf_counter() - started
    return shard_set_from_index(folder, index, new_games=new_games, new_shards=new_shards, seconds=seconds)


def encode_experiment_shards(root, experiment: ExperimentConfig, *, progress: bool = True) -> ShardSet:
    """``encode_shards`` for the games an experiment trains on (``train.games``, ``max_games`` and
    ``train_percent`` from its config): the one call training and the Dagster asset share."""
    train = experiment.train
    return encode_shards(
        root,
        experiment.encoding,
        max_games=train.max_games,
        train_percent=train.train_percent,
        progress=progress,
        selection=train.games,
    )


def shard_set_from_index(folder: Path, index: ShardIndex, **extra) -> ShardSet:
    return ShardSet(
        path=folder,
        encoding_id=index.encoding_id,
        num_games=len(index.games),
        num_frames=index.num_frames,
        train_md5s=[g.md5 for g in index.games if g.split == "train"],
        val_md5s=[g.md5 for g in index.games if g.split == "val"],
        data_fingerprint=index.data_fingerprint,
        anomalies=index.anomalies,
        skipped=index.skipped,
        **extra,
    )
