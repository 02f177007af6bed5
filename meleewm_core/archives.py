"""Safe extraction of replay archives (.zip, .7z): only .slp files come out, nothing escapes.

Entries with an absolute path or a ``..`` component and symbolic links are refused one by one:
they are skipped, named with their reason in ``ExtractSummary.refused_entries``, and the rest of
the archive is extracted (one hostile entry in a tournament dump should not cost its 10,000 good
replays). An archive whose expanded size or compression ratio is absurd (a zip bomb) is refused
whole with ``UnsafeArchiveError`` naming the archive and the entry. A corrupt archive raises ``CorruptArchiveError``. Files are written through
a temporary name and renamed, so an interrupted extraction leaves no half file; an entry already
extracted with the same size is not written again.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from meleewm_core.store import atomic_path

# A full-length replay is 2-6 MB; a tournament dump of 100k replays is far below 1 TB expanded.
MAX_EXPANDED_BYTES = 1 << 40
MAX_ENTRY_BYTES = 1 << 30
# .slp files compress about 4-6x with zip/7z (mostly float frames); 200x only happens in a bomb.
MAX_COMPRESSION_RATIO = 200.0
REPLAY_SUFFIX = ".slp"
_COPY_CHUNK_BYTES = 1 << 20
_STAGING_PREFIX = ".extract-"


class UnsafeArchiveError(ValueError):
    """An archive entry would escape the destination, is a link, or expands absurdly."""

    def __init__(self, archive: Path, entry: str, reason: str) -> None:
        super().__init__(f"{archive}: refusing entry {entry!r}: {reason}")
        self.archive, self.entry, self.reason = archive, entry, reason


class CorruptArchiveError(ValueError):
    """The archive cannot be read."""


class RefusedEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry: str
    reason: str


class ExtractSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    archive: str
    destination: str
    files: list[str] = Field(default_factory=list, description="every .slp now under destination")
    extracted: int = Field(default=0, description="files written by this call")
    already_present: int = 0
    ignored_entries: int = Field(default=0, description="entries that are not .slp (not extracted)")
    expanded_bytes: int = 0
    refused_entries: list[RefusedEntry] = Field(
        default_factory=list, description="entries skipped because they escape or are links"
    )


def _safe_relative(archive: Path, name: str) -> PurePosixPath:
    normalised = name.replace("\\", "/")
    relative = PurePosixPath(normalised)
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise UnsafeArchiveError(archive, name, "absolute path")
    if any(part == ".." for part in relative.parts):
        raise UnsafeArchiveError(archive, name, "'..' in path")
    return relative


def _check_sizes(archive: Path, name: str, expanded: int, compressed: int | None, total: int) -> None:
    if expanded > MAX_ENTRY_BYTES:
        raise UnsafeArchiveError(archive, name, f"expands to {expanded:,} bytes (limit {MAX_ENTRY_BYTES:,})")
    if total > MAX_EXPANDED_BYTES:
        raise UnsafeArchiveError(archive, name, f"archive expands past {MAX_EXPANDED_BYTES:,} bytes")
    if (
        compressed is not None
        and expanded > (1 << 20)
        and expanded / max(compressed, 1) > MAX_COMPRESSION_RATIO
    ):
        raise UnsafeArchiveError(
            archive,
            name,
            f"compression ratio {expanded / max(compressed, 1):.0f} > {MAX_COMPRESSION_RATIO:.0f}",
        )


def _copy_limited(source: BinaryIO, target: Path, archive: Path, name: str, declared: int) -> None:
    """Copy, refusing more bytes than the entry declared (a lying header cannot bomb us)."""
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(_COPY_CHUNK_BYTES):
            written += len(chunk)
            if written > declared:
                raise UnsafeArchiveError(archive, name, f"expands past its declared {declared:,} bytes")
            out.write(chunk)


def _zip_entries(archive: Path) -> Iterator[tuple[str, int, int, bool, bool]]:
    with zipfile.ZipFile(archive) as handle:
        for info in handle.infolist():
            mode = info.external_attr >> 16
            yield info.filename, info.file_size, info.compress_size, info.is_dir(), stat.S_ISLNK(mode)


def extract_archive(archive: str | os.PathLike[str], destination: str | os.PathLike[str]) -> ExtractSummary:
    """Extract the .slp files of a .zip or .7z archive into ``destination`` (nested folders kept)."""
    archive = Path(archive)
    destination = Path(destination)
    suffix = archive.suffix.lower()
    if suffix not in (".zip", ".7z"):
        raise ValueError(f"{archive}: not a .zip or .7z archive")
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    summary = ExtractSummary(archive=str(archive), destination=str(destination))
    _remove_leftovers(destination)
    try:
        if suffix == ".zip":
            _extract_zip(archive, destination, summary)
        else:
            _extract_7z(archive, destination, summary)
    except (UnsafeArchiveError, FileNotFoundError, PermissionError):
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, RuntimeError) as error:
        raise CorruptArchiveError(
            f"{archive}: cannot read archive: {type(error).__name__}: {error}"
        ) from error
    summary.files = sorted(
        str(path)
        for path in (destination.rglob(f"*{REPLAY_SUFFIX}") if destination.exists() else [])
        # a staging folder an interrupted 7z extraction left behind holds no finished file
        if not any(part.startswith(_STAGING_PREFIX) for part in path.relative_to(destination).parts)
    )
    return summary


def _remove_leftovers(destination: Path) -> None:
    """Temporary files and staging folders an interrupted extraction left behind."""
    if not destination.is_dir():
        return
    for staging in destination.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(staging, ignore_errors=True)
    for partial in destination.rglob(".*.tmp"):
        partial.unlink(missing_ok=True)


def _plan(archive: Path, entries, summary: ExtractSummary) -> list[tuple[str, PurePosixPath, int]]:
    """Validate every entry before writing anything; return the .slp entries to extract."""
    planned = []
    total = 0
    for name, expanded, compressed, is_dir, is_link in entries:
        try:
            relative = _safe_relative(archive, name)
            if is_link:
                raise UnsafeArchiveError(archive, name, "symbolic link")
        except UnsafeArchiveError as refused:
            summary.refused_entries.append(RefusedEntry(entry=name, reason=refused.reason))
            continue
        if is_dir:
            continue
        total += expanded
        _check_sizes(archive, name, expanded, compressed, total)
        if relative.suffix.lower() != REPLAY_SUFFIX:
            summary.ignored_entries += 1
            continue
        planned.append((name, relative, expanded))
    summary.expanded_bytes = total
    return planned


def _extract_zip(archive: Path, destination: Path, summary: ExtractSummary) -> None:
    planned = _plan(archive, list(_zip_entries(archive)), summary)
    with zipfile.ZipFile(archive) as handle:
        for name, relative, expanded in planned:
            target = destination.joinpath(*relative.parts)
            if target.is_file() and target.stat().st_size == expanded:
                summary.already_present += 1
                continue
            with handle.open(name) as source, atomic_path(target) as tmp:
                _copy_limited(source, tmp, archive, name, expanded)
            summary.extracted += 1


def _extract_7z(archive: Path, destination: Path, summary: ExtractSummary) -> None:
    import tempfile

    import py7zr

    with py7zr.SevenZipFile(archive, mode="r") as handle:
        infos = handle.list()
    entries = [
        (info.filename, info.uncompressed or 0, info.compressed, info.is_directory, bool(info.is_symlink))
        for info in infos
    ]
    planned = _plan(archive, entries, summary)
    wanted = []
    for name, relative, expanded in planned:
        target = destination.joinpath(*relative.parts)
        if target.is_file() and target.stat().st_size == expanded:
            summary.already_present += 1
        else:
            wanted.append((name, relative))
    if not wanted:
        return
    # py7zr extracts to a folder; use a private one beside the destination, then move each file
    # into place atomically (same filesystem).
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=_STAGING_PREFIX, dir=destination) as staging:
        with py7zr.SevenZipFile(archive, mode="r") as handle:
            handle.extract(path=staging, targets=[name for name, _ in wanted])
        for name, relative in wanted:
            staged = Path(staging).joinpath(*relative.parts)
            if staged.is_symlink() or not staged.is_file():
                raise UnsafeArchiveError(archive, name, "did not extract as a regular file")
            target = destination.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.move(staged, tmp)
            summary.extracted += 1
