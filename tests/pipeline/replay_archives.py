"""Test data for the pipeline tests: which real replays go into which archive, and the sources file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from replay_http_server import ReplayHTTPServer

# Training-eligible real games (two humans, versus, a minute or more), split over two archives.
ARCHIVE_A_GAMES = (
    "project-slippi__slippi-js/BH9.slp",
    "project-slippi__slippi-js/techTest.slp",
    "hohav__peppi/v2.0.slp",
)
ARCHIVE_B_GAMES = (
    "hohav__peppi/nintendont.slp",
    "hohav__peppi/duplicate_game_end.slp",
)
# Truncated file: peppi raises "failed to fill whole buffer" (SOURCES.md, failure modes).
MALFORMED = "hohav__peppi/malformed/corrupt.slp"
# The copy of an archive-A game that archive B carries under another name.
DUPLICATED = ARCHIVE_A_GAMES[0]
ESCAPE_ENTRY = "../../escape.slp"


@dataclass(frozen=True)
class ServedArchives:
    folder: Path
    sha256: dict[str, str]  # archive file name -> sha256
    duplicate_md5: str
    malformed_name: str


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def write_sources_file(
    path: Path,
    server: ReplayHTTPServer,
    served: ServedArchives,
    archives: tuple[str, ...] = ("tournament-a.7z", "tournament-b.zip"),
) -> Path:
    """A sources file with one source per served archive, named after it, sha256 recorded."""
    sources = [
        {
            "name": Path(archive).stem,
            "url": server.url(archive),
            "format": Path(archive).suffix[1:],
            "sha256": served.sha256[archive],
            "description": f"test archive {archive}",
        }
        for archive in archives
    ]
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path
