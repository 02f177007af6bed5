"""Where things live under the data root, and how every file there is written.

Layout (default root ``./data``, ``MELEEWM_DATA`` overrides)::

    raw/<source>/<archive>        downloaded archive (resumable, checksummed)
    raw/<source>/extracted/...    its .slp files
    inbox/                        drop an archive or folder here and the sensor picks it up
    games/<md5>.parquet           one parsed replay, content-addressed, zstd
    ledger.parquet                one row per (source, file)
    meta.json, manifest.parquet   the de-duplicated game table
    shards/<encoding-id>/         encoded tensors with index.json
    runs/<experiment>/<run-id>/   checkpoints, run manifest, metrics, plots

Every write goes through a temporary file in the same folder followed by ``os.replace``,
so an interrupted run leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_ENV = "MELEEWM_DATA"
REPLAYS_ENV = "MELEEWM_REPLAYS"
DEFAULT_DATA = Path("data")
DEFAULT_REPLAYS = Path("~/Slippi")


class MissingFolderError(FileNotFoundError):
    """A folder the user must provide does not exist; the message says what to set."""


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA).expanduser()


def default_replay_folder(*, must_exist: bool = True) -> Path:
    """The default local source: ``MELEEWM_REPLAYS`` if set, else ``~/Slippi``."""
    folder = Path(os.environ.get(REPLAYS_ENV) or DEFAULT_REPLAYS).expanduser()
    if must_exist and not folder.is_dir():
        how = f"{REPLAYS_ENV}={folder}" if os.environ.get(REPLAYS_ENV) else f"the default {folder}"
        raise MissingFolderError(
            f"replay folder not found: {how} does not exist. Set {REPLAYS_ENV} to a folder of .slp "
            f"files (the Slippi launcher saves them to ~/Slippi), e.g. "
            f"`{REPLAYS_ENV}=../shared/replays make run`."
        )
    return folder


@dataclass(frozen=True)
class DataRoot:
    """Paths under one data root. Nothing here touches the disk except ``ensure``."""

    root: Path

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> DataRoot:
        return cls(Path(root).expanduser() if root else default_data_root())

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    def source_raw_dir(self, source: str) -> Path:
        return self.raw_dir / source

    def source_extracted_dir(self, source: str) -> Path:
        return self.raw_dir / source / "extracted"

    @property
    def inbox_dir(self) -> Path:
        return self.root / "inbox"

    @property
    def games_dir(self) -> Path:
        return self.root / "games"

    def game_path(self, md5: str) -> Path:
        return self.games_dir / f"{md5}.parquet"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def meta_json_path(self) -> Path:
        return self.root / "meta.json"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def ensure(self) -> DataRoot:
        for folder in (self.root, self.games_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; data files are meant to be shared like any other output.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_new_bytes_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """``write_bytes_atomic`` for the thousands of small files a parse writes into an existing
    folder: one exclusive create, one write, one rename (``mkstemp`` + ``chmod`` cost as much as
    encoding a small games file). ``data``: bytes or any buffer. The temporary name is one
    ``remove_stale_temp_files`` deletes."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, default=str) + "\n")


def write_parquet_atomic(table, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write a pyarrow Table as zstd parquet, atomically."""
    import pyarrow.parquet as pq

    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temp files an interrupted writer left behind; returns how many."""
    if not folder.is_dir():
        return 0
    removed = 0
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def file_md5(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
