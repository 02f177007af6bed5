"""Where replays come from: the sources file, the default local folder, and the inbox.

A *source* is one tournament dump, collection or folder; the pipeline partitions by source name.
Three kinds:

* ``download``: an HTTP(S) URL of a ``.7z``/``.zip`` archive, fetched into ``raw/<name>/`` by
  :func:`meleewm_core.download.fetch_source` (resumable, checksummed);
* ``local``: a ``file://`` URL or a plain path of an archive or folder, used in place (no copy);
* ``manual``: a link a user opens in a browser (Google Drive, OneDrive folders cannot be fetched
  by a script); the user puts the downloaded archives or ``.slp`` files into ``raw/<name>/``.

The sources file (``sources.yaml`` at the repository top, ``MELEEWM_SOURCES`` overrides) lists the
public archives; the default local source ``local`` is ``MELEEWM_REPLAYS`` (else ``~/Slippi``); every
archive or folder dropped into ``<data>/inbox/`` is a source named ``inbox-<its name>``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from meleewm_core.store import DataRoot, default_replay_folder

SOURCES_ENV = "MELEEWM_SOURCES"
DEFAULT_SOURCES_FILE = Path(__file__).resolve().parents[1] / "sources.yaml"
LOCAL_SOURCE_NAME = "local"
INBOX_PREFIX = "inbox-"
ARCHIVE_SUFFIXES = {".7z": "7z", ".zip": "zip"}
SOURCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"

SourceFormat = Literal["7z", "zip", "folder"]
SourceKind = Literal["download", "local", "manual"]


class SourcesFileError(ValueError):
    """The sources file is missing or malformed; the message names the file and the entry."""


class SourceConfig(BaseModel):
    """One entry of the sources file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SOURCE_NAME_PATTERN, description="partition key; lower-case slug")
    url: str | None = Field(
        None, description="http(s):// archive, file:// archive or folder, a local path, or a page to visit"
    )
    format: SourceFormat
    size_bytes: int | None = Field(None, ge=0, description="archive size when known; checked when given")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="verified when given")
    manual: bool = Field(False, description="a person downloads it into raw/<name>/ (no direct link)")
    url_verified: bool = Field(True, description="false: the URL was not confirmed from a public page")
    description: str = Field(min_length=1)

    @model_validator(mode="after")
    def _url_required_unless_manual(self) -> SourceConfig:
        if not self.manual and not self.url:
            raise ValueError(f"source {self.name!r}: a source that is not manual needs a url")
        if self.kind == "download" and self.format == "folder":
            raise ValueError(f"source {self.name!r}: an http(s) url must name a .7z or .zip archive")
        return self

    @property
    def kind(self) -> SourceKind:
        if self.manual:
            return "manual"
        scheme = urlparse(self.url or "").scheme.lower()
        return "download" if scheme in ("http", "https") else "local"

    @property
    def local_path(self) -> Path | None:
        """The archive or folder on this machine for a ``local`` source, else None."""
        if self.kind != "local" or not self.url:
            return None
        parsed = urlparse(self.url)
        if parsed.scheme == "file":
            return Path(unquote(parsed.path))
        return Path(self.url).expanduser()

    @property
    def archive_filename(self) -> str:
        """File name of the downloaded archive under ``raw/<name>/``."""
        name = Path(unquote(urlparse(self.url or "").path)).name
        if name.lower().endswith(f".{self.format}"):
            return name
        return f"{self.name}.{self.format}"


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[SourceConfig]

    @model_validator(mode="after")
    def _unique_names(self) -> SourcesFile:
        seen: set[str] = set()
        for source in self.sources:
            if source.name in seen:
                raise ValueError(f"source name {source.name!r} appears twice")
            if source.name == LOCAL_SOURCE_NAME or source.name.startswith(INBOX_PREFIX):
                raise ValueError(
                    f"source name {source.name!r} is reserved (the default local folder is "
                    f"{LOCAL_SOURCE_NAME!r}, inbox entries are {INBOX_PREFIX}*)"
                )
            seen.add(source.name)
        return self


def sources_file_path(path: str | os.PathLike[str] | None = None) -> Path:
    return Path(path or os.environ.get(SOURCES_ENV) or DEFAULT_SOURCES_FILE).expanduser()


def load_sources(path: str | os.PathLike[str] | None = None) -> list[SourceConfig]:
    """The sources listed in the sources file (``MELEEWM_SOURCES`` or the top-level sources.yaml)."""
    file = sources_file_path(path)
    if not file.is_file():
        raise SourcesFileError(f"sources file not found: {file} (set {SOURCES_ENV} to a sources.yaml)")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        return SourcesFile.model_validate(raw).sources
    except (yaml.YAMLError, ValidationError) as error:
        raise SourcesFileError(f"{file}: {error}") from error


def local_source(folder: str | os.PathLike[str] | None = None) -> SourceConfig:
    """The default local source: ``folder``, else ``MELEEWM_REPLAYS``, else ``~/Slippi``."""
    path = Path(folder).expanduser() if folder else default_replay_folder(must_exist=False)
    return SourceConfig(
        name=LOCAL_SOURCE_NAME,
        url=str(path.resolve()),
        format="folder",
        description=f"local replay folder {path}",
    )


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug or "unnamed"


def inbox_sources(root: DataRoot) -> list[SourceConfig]:
    """One source per archive or folder in ``<data>/inbox`` (hidden and partial files ignored)."""
    if not root.inbox_dir.is_dir():
        return []
    found = []
    for entry in sorted(root.inbox_dir.iterdir()):
        if entry.name.startswith(".") or entry.suffix in (".part", ".tmp"):
            continue
        if entry.is_dir():
            source_format: SourceFormat = "folder"
        elif entry.suffix.lower() in ARCHIVE_SUFFIXES:
            source_format = ARCHIVE_SUFFIXES[entry.suffix.lower()]  # type: ignore[assignment]
        else:
            continue
        stem = entry.name if entry.is_dir() else entry.stem
        found.append(
            SourceConfig(
                name=f"{INBOX_PREFIX}{slugify(stem)}"[:100],
                url=entry.resolve().as_uri(),
                format=source_format,
                description=f"dropped into the inbox: {entry.name}",
            )
        )
    return found


def discover_sources(
    root: DataRoot,
    *,
    sources_file: str | os.PathLike[str] | None = None,
    local_folder: str | os.PathLike[str] | None = None,
    include_missing_local: bool = False,
) -> list[SourceConfig]:
    """Every source the pipeline knows now: the sources file, the local folder, the inbox.

    The local source is left out while its folder does not exist (unless asked), so a machine
    without ``~/Slippi`` does not get a partition that can only fail.
    """
    sources = load_sources(sources_file)
    local = local_source(local_folder)
    if include_missing_local or (local.local_path and local.local_path.is_dir()):
        sources.append(local)
    sources.extend(inbox_sources(root))
    by_name: dict[str, SourceConfig] = {}
    for source in sources:
        if source.name in by_name:
            raise SourcesFileError(f"two sources are named {source.name!r}: rename one")
        by_name[source.name] = source
    return list(by_name.values())


def find_source(sources: list[SourceConfig], name: str) -> SourceConfig:
    for source in sources:
        if source.name == name:
            return source
    known = ", ".join(s.name for s in sources) or "none"
    raise KeyError(f"unknown source {name!r}; known sources: {known}")
