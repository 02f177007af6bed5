"""Fetch a source's archive: resumable HTTP(S) download, checksum, atomic result.

A download writes ``<archive>.part`` beside its target and asks the server for the remaining
bytes (``Range: bytes=N-``) after an interruption, in this process or a later run; the finished
file is checked (size, sha256) and only then renamed to its final name, so ``raw/<source>/<archive>``
is either absent or complete and verified. ``file://`` URLs and local paths are used in place.
"""

from __future__ import annotations

import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from meleewm_core.sources import SourceConfig
from meleewm_core.store import DataRoot, file_sha256

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes or None) as a download proceeds."""

USER_AGENT = "meleewm/0.1 (+https://github.com/; replay pipeline)"
RETRYABLE_HTTP_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A download failed for good (after retries, or on an error retrying cannot fix)."""


class ChecksumMismatchError(DownloadError):
    """The file's sha256 or size differs from the one recorded for it."""


class ManualSourceMissingError(FileNotFoundError):
    """A manual source has not been downloaded into its folder yet; the message says where."""


class DownloadResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path
    size_bytes: int
    sha256: str
    downloaded_bytes: int
    resumed_from_bytes: int
    attempts: int
    already_present: bool


class FetchedSource(BaseModel):
    """Where a source's replays are on this machine after :func:`fetch_source`."""

    model_config = ConfigDict(extra="forbid")

    source: str
    kind: str
    path: Path
    is_archive: bool
    size_bytes: int
    sha256: str | None
    download: DownloadResult | None = None


def _partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _verify(path: Path, url: str, sha256: str | None, size_bytes: int | None) -> str:
    size = path.stat().st_size
    if size_bytes is not None and size != size_bytes:
        raise ChecksumMismatchError(
            f"{url}: size mismatch for {path}: expected {size_bytes} bytes, got {size} bytes"
        )
    actual = file_sha256(path)
    if sha256 is not None and actual != sha256.lower():
        raise ChecksumMismatchError(
            f"{url}: sha256 mismatch for {path}: expected {sha256.lower()}, got {actual}"
        )
    return actual


def _total_from_headers(response: http.client.HTTPResponse, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range")  # "bytes 100-999/1000"
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _fetch_once(
    url: str,
    partial: Path,
    *,
    timeout_s: float,
    chunk_bytes: int,
    progress: ProgressCallback | None,
) -> tuple[int, int]:
    """One attempt: append the missing bytes to ``partial``. Returns (offset it started at, bytes read)."""
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The part file already holds every byte; the checksum decides whether it is right.
            return offset, 0
        raise
    with response:
        if offset and response.status != 206:
            # The server ignored the Range header and sends the whole file: start over.
            offset = 0
        total = _total_from_headers(response, offset)
        mode = "ab" if offset else "wb"
        read = 0
        with open(partial, mode) as handle:
            while chunk := response.read(chunk_bytes):
                handle.write(chunk)
                read += len(chunk)
                if progress:
                    progress(offset + read, total)
        if total is not None and offset + read < total:
            raise http.client.IncompleteRead(b"", total - offset - read)
    return offset, read


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    size_bytes: int | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
    progress: ProgressCallback | None = None,
) -> DownloadResult:
    """Download ``url`` to ``dest``, resuming a previous partial download, verifying the checksum.

    Retries network errors and 408/429/5xx answers ``retries`` times with exponential backoff
    (``backoff_s``, doubled each time), each retry resuming where the last one stopped. A file
    already at ``dest`` that matches ``sha256``/``size_bytes`` is kept without a request.
    """
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        actual = _verify(target, url, sha256, size_bytes)
        return DownloadResult(
            path=target,
            size_bytes=target.stat().st_size,
            sha256=actual,
            downloaded_bytes=0,
            resumed_from_bytes=0,
            attempts=0,
            already_present=True,
        )
    partial = _partial_path(target)
    first_offset: int | None = None
    downloaded = 0
    attempt = 0
    while True:
        attempt += 1
        kept = partial.stat().st_size if partial.exists() else 0
        first_offset = kept if first_offset is None else first_offset
        try:
            _, read = _fetch_once(
                url, partial, timeout_s=timeout_s, chunk_bytes=chunk_bytes, progress=progress
            )
            downloaded += read
            break
        except urllib.error.HTTPError as error:
            if error.code not in RETRYABLE_HTTP_STATUS or attempt > retries:
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason} (attempt {attempt})") from error
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
            if attempt > retries:
                kept = partial.stat().st_size if partial.exists() else 0
                raise DownloadError(
                    f"{url}: {type(error).__name__}: {error} after {attempt} attempts "
                    f"({kept} bytes kept in {partial}; the next run resumes from there)"
                ) from error
        downloaded += max(0, (partial.stat().st_size if partial.exists() else 0) - kept)
        time.sleep(backoff_s * (2 ** (attempt - 1)))
    try:
        actual = _verify(partial, url, sha256, size_bytes)
    except ChecksumMismatchError:
        # A wrong file must not be resumed from next time.
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return DownloadResult(
        path=target,
        size_bytes=target.stat().st_size,
        sha256=actual,
        downloaded_bytes=downloaded,
        resumed_from_bytes=first_offset,
        attempts=attempt,
        already_present=False,
    )


def raw_archive_path(source: SourceConfig, root: DataRoot) -> Path:
    """Where a downloaded source's archive lives: ``raw/<source>/<archive file name>``."""
    return root.source_raw_dir(source.name) / source.archive_filename


def fetch_source(
    source: SourceConfig,
    root: DataRoot,
    *,
    progress: ProgressCallback | None = None,
    verified: bool = False,
    **download_options,
) -> FetchedSource:
    """Make a source's archive or folder available locally and say where it is.

    ``download`` sources are downloaded (or found complete) under ``raw/<name>/``; ``local`` sources
    are checked and used in place; ``manual`` sources must already be in ``raw/<name>/``.
    ``verified=True`` trusts an archive already in place (a step after ``raw_archive`` checked it)
    instead of hashing it again.
    """
    if verified and source.kind == "download" and raw_archive_path(source, root).is_file():
        path = raw_archive_path(source, root)
        return FetchedSource(
            source=source.name,
            kind=source.kind,
            path=path,
            is_archive=True,
            size_bytes=path.stat().st_size,
            sha256=None,
        )
    if source.kind == "download":
        assert source.url is not None
        result = download(
            source.url,
            raw_archive_path(source, root),
            sha256=source.sha256,
            size_bytes=source.size_bytes,
            progress=progress,
            **download_options,
        )
        return FetchedSource(
            source=source.name,
            kind=source.kind,
            path=result.path,
            is_archive=True,
            size_bytes=result.size_bytes,
            sha256=result.sha256,
            download=result,
        )
    if source.kind == "local":
        path = source.local_path
        assert path is not None
        if not path.exists():
            raise FileNotFoundError(f"source {source.name!r}: {path} does not exist (url {source.url})")
        if path.is_dir():
            size = sum(p.stat().st_size for p in path.rglob("*.slp") if p.is_file())
            return FetchedSource(
                source=source.name,
                kind=source.kind,
                path=path,
                is_archive=False,
                size_bytes=size,
                sha256=None,
            )
        actual = (
            None if verified else _verify(path, source.url or str(path), source.sha256, source.size_bytes)
        )
        return FetchedSource(
            source=source.name,
            kind=source.kind,
            path=path,
            is_archive=True,
            size_bytes=path.stat().st_size,
            sha256=actual,
        )
    folder = root.source_raw_dir(source.name)
    contents = (
        [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if folder.is_dir()
        else []
    )
    if not contents:
        where = f" from {source.url}" if source.url else ""
        raise ManualSourceMissingError(
            f"source {source.name!r} is downloaded by hand: put its archives or .slp files{where} "
            f"into {folder} and materialize again"
        )
    return FetchedSource(
        source=source.name,
        kind=source.kind,
        path=folder,
        is_archive=False,
        size_bytes=sum(p.stat().st_size for p in contents),
        sha256=None,
    )


def copy_into_inbox(path: str | os.PathLike[str], root: DataRoot) -> Path:
    """Copy an archive or folder into the inbox atomically, so the sensor never sees half of it."""
    src = Path(path)
    root.inbox_dir.mkdir(parents=True, exist_ok=True)
    target = root.inbox_dir / src.name
    staging = root.inbox_dir / f".{src.name}.tmp"
    if src.is_dir():
        shutil.copytree(src, staging, dirs_exist_ok=True)
    else:
        shutil.copyfile(src, staging)
    os.replace(staging, target)
    return target
