"""From a fetched source to the list of ``.slp`` files to parse (extracting archives safely).

Layout: a downloaded archive is extracted into ``raw/<source>/extracted/``; a manual source's
folder ``raw/<source>/`` may hold archives (each extracted into ``extracted/<archive stem>/``)
and loose ``.slp`` files; a local folder is read in place, nothing is copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from meleewm_core.archives import extract_archive
from meleewm_core.download import FetchedSource
from meleewm_core.sources import ARCHIVE_SUFFIXES, SourceConfig
from meleewm_core.store import DataRoot


class UnpackedSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    replay_files: list[Path]
    replay_bytes: int
    extractions: list[dict[str, Any]]
    """One entry per archive extracted: the archive and what the extractor reported."""


def find_replays(folder: Path, *, exclude: Path | None = None) -> list[Path]:
    """Every ``.slp`` under ``folder`` (any nesting, any case of the suffix), sorted."""
    found = [
        path
        for path in folder.rglob("*")
        if path.suffix.lower() == ".slp"
        and path.is_file()
        and not path.name.startswith(".")
        and (exclude is None or not path.is_relative_to(exclude))
    ]
    return sorted(found)


def _extract(archive: Path, dest: Path) -> dict[str, Any]:
    summary = extract_archive(archive, dest)
    return summary.model_dump(mode="json", exclude={"files"})


def unpack_source(fetched: FetchedSource, root: DataRoot) -> UnpackedSource:
    """Extract the source's archives (if any) and list its replays.

    Raises the extractor's ``UnsafeArchiveError`` (zip bombs; escaping entries and links are skipped
    and listed in the extraction's ``refused_entries``) or its error
    for a corrupt archive; the caller fails that source only.
    """
    extracted = root.source_extracted_dir(fetched.source)
    extractions = []
    if fetched.is_archive:
        extractions.append(_extract(fetched.path, extracted))
        files = find_replays(extracted)
    elif fetched.kind == "manual":
        for archive in sorted(fetched.path.iterdir()):
            if archive.is_file() and archive.suffix.lower() in ARCHIVE_SUFFIXES:
                extractions.append(_extract(archive, extracted / archive.stem))
        files = find_replays(extracted) + find_replays(fetched.path, exclude=extracted)
    else:
        files = find_replays(fetched.path)
    return UnpackedSource(
        source=fetched.source,
        replay_files=files,
        replay_bytes=sum(path.stat().st_size for path in files),
        extractions=extractions,
    )


def source_replay_files(source: SourceConfig, root: DataRoot) -> list[Path]:
    """The ``.slp`` files of a source already fetched and unpacked (nothing is extracted here)."""
    if source.kind == "local" and source.format == "folder":
        assert source.local_path is not None
        return find_replays(source.local_path)
    # Downloaded and local archives are extracted under raw/<name>/extracted; a manual source's
    # loose files and extracted archives are both under raw/<name>/.
    folder = root.source_raw_dir(source.name)
    return find_replays(folder) if folder.is_dir() else []
