"""Parse benchmark: `meleewm parse` against a bare `peppi_py.read_slippi` of the same files.

    python bench/parse.py [REPLAY_FOLDER] [--repeats 5] [--workers N] [--cpu-only]

Both run in this one process on the same files (those peppi reads fully), warm page cache, best
of ``--repeats``. Per-core figures are CPU seconds of this process (``time.process_time``, so other
load on a shared machine inflates them less than wall time): peppi's bare read of every file in a
loop, against ``parse_one`` of every file in a loop, the exact per-file work a ``meleewm parse``
worker does (md5 + read + rollback resolution + column conforming + cleaning + metadata + zstd
parquet write). The two loops alternate, round after round, so a busy spell of the machine hits
both alike.
Wall-clock figures of whole ``parse_paths`` runs (one worker, and ``--workers``) add worker
start-up, scheduling and ledger writes. Rows are peppi's frame rows (rollback rows included), the
same count for both, so the ratio is a pure cost ratio.

Reference (the reference implementation's parser, 128 of these replays, one core): ~124 ms per
replay, ~33 ms per 1,000 frame rows, ~20x peppi's bare read. Target: at most 4x peppi.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

REFERENCE_MS_PER_1000_ROWS = 33.0
REFERENCE_MS_PER_REPLAY = 124.0
TARGET_RATIO = 4.0


def default_folder() -> Path:
    env = os.environ.get("MELEEWM_TEST_REPLAYS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "replays"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peppi_readable(files: list[Path]) -> tuple[list[Path], int]:
    """The files peppi reads fully, and their frame rows (this pass also warms the page cache)."""
    import peppi_py

    readable, rows = [], 0
    for path in files:
        try:
            game = peppi_py.read_slippi(str(path))
        except BaseException as error:  # noqa: BLE001 - PanicException is a BaseException
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            continue
        readable.append(path)
        rows += len(game.frames.id)
    return readable, rows


def time_peppi(files: list[Path]) -> float:
    import peppi_py

    started = time.process_time()
    for path in files:
        peppi_py.read_slippi(str(path))
    return time.process_time() - started


def time_parse_one(files: list[Path]) -> float:
    from meleewm_core.parse import parse_one

    with tempfile.TemporaryDirectory(prefix="bench-parse-") as games:
        started = time.process_time()
        for path in files:
            result = parse_one(str(path), games, True)
            assert result["status"] == "ok", result
        return time.process_time() - started


def time_cpu(files: list[Path], repeats: int) -> tuple[float, float]:
    """Best CPU seconds of (peppi's bare read, parse_one), the loops alternating round by round."""
    rounds = [(time_peppi(files), time_parse_one(files)) for _ in range(repeats)]
    return min(peppi for peppi, _ in rounds), min(parse for _, parse in rounds)


def time_parse_paths(files: list[Path], repeats: int, workers: int) -> float:
    """Best wall seconds of whole runs into fresh data roots."""
    from meleewm_core.parse import parse_paths
    from meleewm_core.store import DataRoot

    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="bench-parse-") as folder:
            started = time.perf_counter()
            summary = parse_paths(
                files, DataRoot(Path(folder)), source="bench", workers=workers, progress=False
            )
            best = min(best, time.perf_counter() - started)
            assert summary.failed == 0, summary.describe()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", type=Path, default=default_folder())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cpu-only", action="store_true", help="skip the wall-clock parse_paths runs")
    args = parser.parse_args()

    os.environ["RUST_BACKTRACE"] = "0"
    files = sorted(p for p in args.folder.rglob("*.slp") if p.is_file())
    files, rows = peppi_readable(files)
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}; {len(files)} replays peppi reads fully, "
        f"{rows:,} frame rows, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB"
    )

    peppi_s, core_s = time_cpu(files, args.repeats)

    def line(name: str, seconds: float) -> str:
        return (
            f"{name:<34} {seconds:7.3f} s  {rows / seconds:>11,.0f} rows/s  "
            f"{1000 * seconds / rows * 1000:6.2f} ms/1k rows  {1000 * seconds / len(files):6.1f} ms/replay"
        )

    print(line("peppi_py.read_slippi, CPU", peppi_s))
    print(line("meleewm parse per file, CPU", core_s))
    if not args.cpu_only:
        print(line("meleewm parse, 1 worker, wall", time_parse_paths(files, args.repeats, workers=1)))
        wall_n = time_parse_paths(files, args.repeats, workers=args.workers)
        print(line(f"meleewm parse, {args.workers} workers, wall", wall_n))
    ratio = core_s / peppi_s
    speedup = REFERENCE_MS_PER_1000_ROWS / (1000 * core_s / rows * 1000)
    print(f"cost ratio meleewm/peppi per core: {ratio:.2f}x (target <= {TARGET_RATIO:g}x; reference ~20x)")
    print(
        f"rows/s per core vs reference ({REFERENCE_MS_PER_1000_ROWS:g} ms/1k rows): {speedup:.1f}x faster "
        f"(target >= 5x)"
    )


if __name__ == "__main__":
    main()
