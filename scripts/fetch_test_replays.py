"""Download the pinned test replays into a folder (default ../shared/replays).

    python scripts/fetch_test_replays.py [TARGET] [--lock scripts/test_replays.lock]

Every line of the lock file names one file: its path under TARGET, the GitHub repository, its path
in the repository, the commit, its size and md5. The file comes from
``https://raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>``; a path written
``archive.zip!entry`` is that entry of the archive at that commit. Each file is checked against its
size and md5 before it is moved into place (atomic rename); a file already present and correct is
not downloaded again, one present but different is replaced. Exit code 1 when any file failed.

The files stay in TARGET, outside the repository: the project never commits them. SOURCES.md
(licenses, provenance) lives beside them in ../shared/replays.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LOCK = REPO / "scripts" / "test_replays.lock"
DEFAULT_TARGET = REPO.parent / "shared" / "replays"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
RETRIES = 3
TIMEOUT_S = 60


@dataclass(frozen=True)
class PinnedFile:
    relative_path: str
    repo: str
    repo_path: str
    commit: str
    size_bytes: int
    md5: str

    @property
    def url(self) -> str:
        return RAW_URL.format(repo=self.repo, commit=self.commit, path=self.repo_path.split("!", 1)[0])

    @property
    def archive_entry(self) -> str | None:
        return self.repo_path.split("!", 1)[1] if "!" in self.repo_path else None


def read_lock(lock: Path) -> list[PinnedFile]:
    pinned = []
    for number, line in enumerate(lock.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 6:
            raise ValueError(f"{lock}:{number}: expected 6 tab-separated fields, found {len(fields)}")
        relative, repo, repo_path, commit, size, md5 = fields
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise ValueError(f"{lock}:{number}: path {relative!r} must stay inside the target folder")
        pinned.append(PinnedFile(relative, repo, repo_path, commit, int(size), md5))
    return pinned


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def is_correct(path: Path, pinned: PinnedFile) -> bool:
    return (
        path.is_file()
        and path.stat().st_size == pinned.size_bytes
        and md5_of(path.read_bytes()) == pinned.md5
    )


def download(url: str) -> bytes:
    for attempt in range(1, RETRIES + 1):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                return response.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            if attempt == RETRIES or (isinstance(error, urllib.error.HTTPError) and error.code == 404):
                raise
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def fetch_one(pinned: PinnedFile, target: Path, archives: dict[str, bytes]) -> None:
    """Download, verify, then atomically move into place. Raises ValueError on a mismatch."""
    if pinned.archive_entry is None:
        data = download(pinned.url)
    else:
        if pinned.url not in archives:
            archives[pinned.url] = download(pinned.url)
        with zipfile.ZipFile(io.BytesIO(archives[pinned.url])) as archive:
            data = archive.read(pinned.archive_entry)
    if len(data) != pinned.size_bytes or md5_of(data) != pinned.md5:
        raise ValueError(
            f"{pinned.relative_path}: downloaded {len(data)} bytes with md5 {md5_of(data)}, "
            f"expected {pinned.size_bytes} bytes with md5 {pinned.md5} ({pinned.url})"
        )
    destination = target / pinned.relative_path
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, destination)
    finally:
        Path(tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", nargs="?", type=Path, default=DEFAULT_TARGET, help="folder to fill")
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="pinned file list")
    args = parser.parse_args(argv)

    pinned = read_lock(args.lock)
    archives: dict[str, bytes] = {}
    present = fetched = 0
    failed: list[str] = []
    for number, item in enumerate(pinned, start=1):
        if is_correct(args.target / item.relative_path, item):
            present += 1
            continue
        print(f"[{number}/{len(pinned)}] {item.relative_path}", flush=True)
        try:
            fetch_one(item, args.target, archives)
            fetched += 1
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            failed.append(f"{item.relative_path}: {type(error).__name__}: {error}")
    print(f"{args.target}: {fetched} downloaded, {present} already correct, {len(failed)} failed")
    for line in failed:
        print(f"  FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
