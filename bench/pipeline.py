"""Pipeline benchmark: the ingest through Dagster against the same work through the `meleewm` CLI.

    python bench/pipeline.py [REPLAY_FOLDER] [--sizes 30,0] [--repeats 1] [--json OUT]

The shared replays (or the first N of them, per ``--sizes``; 0 means all) are packed into two real
archives, half in a .7z and half in a .zip, served by an HTTP server on 127.0.0.1. Then, in one
run, on the same files, each path starts from an empty data root:

* CLI: per archive ``curl -o`` (download) and ``meleewm parse ARCHIVE --source NAME`` (extract +
  parse), then ``meleewm manifest``: 5 processes for 2 archives.
* Dagster: the run a backfill of the two new sources launches (``BackfillPolicy.multi_run`` puts
  both partitions in one run): ``dagster job execute -j ingest_job`` with the partition-range tags,
  against a SQLite instance in a fresh DAGSTER_HOME (the project's dagster.yaml): 1 process. With
  ``--per-source``, one ``dagster asset materialize --partition NAME`` per source instead (2
  processes, the manifest rebuilt twice). Either way it does the CLI's work plus a checksum of each
  archive, the event log writes, the checks and the materialization metadata.

Both use the default worker count (CPU count). Figures: wall seconds of each path, and CPU seconds
(user + system of every process it started, parse workers included: on a shared machine the CPU
figure is the one other load does not inflate), the ratio, the Dagster overhead (difference) and
that overhead per replay at each size, so a per-replay overhead that grows with the number of
replays would show. Best of ``--repeats``, the two paths interleaved. Target (issue 4): Dagster
<= 1.5x the CLI for the shared replays.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import py7zr
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_RATIO = 1.5
INGEST_ASSETS = "raw_archive,extracted_replays,parsed_replays,replay_manifest"


def default_folder() -> Path:
    env = os.environ.get("MELEEWM_TEST_REPLAYS")
    return Path(env) if env else REPO.parent / "shared" / "replays"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def build_archives(replays: list[Path], folder: Path, out: Path) -> dict[str, str]:
    """Half the replays in bench-a.7z, half in bench-b.zip; returns name -> sha256."""
    half = len(replays) // 2
    with py7zr.SevenZipFile(
        out / "bench-a.7z", "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 1}]
    ) as archive:
        for path in replays[:half]:
            archive.write(path, arcname=str(path.relative_to(folder)))
    with zipfile.ZipFile(
        out / "bench-b.zip", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
    ) as archive:
        for path in replays[half:]:
            archive.write(path, arcname=str(path.relative_to(folder)))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}


def run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_cli(urls: dict[str, str], work: Path, env: dict[str, str]) -> tuple[float, float]:
    data = work / "cli-data"
    cpu_before, started = children_cpu_s(), time.perf_counter()
    for name, url in urls.items():
        archive = work / "cli-downloads" / Path(url).name
        archive.parent.mkdir(parents=True, exist_ok=True)
        run(["curl", "-sSf", "-o", str(archive), url], env)
        run(
            [str(BIN / "meleewm"), "parse", str(archive), "--source", name, "--data", str(data), "--quiet"],
            env,
        )
    run([str(BIN / "meleewm"), "manifest", "--data", str(data)], env)
    return time.perf_counter() - started, children_cpu_s() - cpu_before


def time_dagster(
    urls: dict[str, str], sha256: dict[str, str], work: Path, env: dict[str, str], per_source: bool
) -> tuple[float, float]:
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    sources = [
        {
            "name": name,
            "url": url,
            "format": Path(url).suffix[1:],
            "sha256": sha256[Path(url).name],
            "description": "benchmark archive",
        }
        for name, url in urls.items()
    ]
    (work / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    env = {
        **env,
        "DAGSTER_HOME": str(home),
        "MELEEWM_DATA": str(work / "dagster-data"),
        "MELEEWM_SOURCES": str(work / "sources.yaml"),
        "MELEEWM_REPLAYS": str(work / "no-local"),
    }
    # Registering the partitions is what the sensor does between ticks; not part of the ingest.
    run(
        [
            sys.executable,
            "-c",
            "import dagster as dg, sys; "
            "dg.DagsterInstance.get().add_dynamic_partitions('source', sys.argv[1:])",
            *urls,
        ],
        env,
    )
    names = list(urls)
    if per_source:
        commands = [
            [
                str(BIN / "dagster"),
                "asset",
                "materialize",
                "-m",
                "meleewm_pipeline.definitions",
                "--select",
                INGEST_ASSETS,
                "--partition",
                name,
            ]
            for name in names
        ]
    else:
        # The one run a backfill of both new sources launches (BackfillPolicy.multi_run batches them).
        tags = {
            "dagster/asset_partition_range_start": names[0],
            "dagster/asset_partition_range_end": names[-1],
        }
        commands = [
            [
                str(BIN / "dagster"),
                "job",
                "execute",
                "-m",
                "meleewm_pipeline.definitions",
                "-j",
                "ingest_job",
                "--tags",
                json.dumps(tags),
            ]
        ]
    cpu_before, started = children_cpu_s(), time.perf_counter()
    for command in commands:
        run(command, env)
    return time.perf_counter() - started, children_cpu_s() - cpu_before


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base-class signature
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=default_folder())
    parser.add_argument("--sizes", default="30,0", help="comma-separated replay counts; 0 = all")
    parser.add_argument("--repeats", type=int, default=1, help="best of N per path and size")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument(
        "--per-source",
        action="store_true",
        help="Dagster path: one `dagster asset materialize --partition` per source instead of one backfill run",
    )
    args = parser.parse_args()

    replays = sorted(p for p in args.folder.rglob("*.slp") if p.is_file())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            chosen = replays[:size] if size else replays
            www = Path(tmp) / f"www-{len(chosen)}"
            www.mkdir()
            sha256 = build_archives(chosen, args.folder, www)
            server = http.server.ThreadingHTTPServer(
                ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www))
            )
            threading.Thread(target=server.serve_forever, daemon=True).start()
            urls = {
                f"bench-{x}": f"http://127.0.0.1:{server.server_address[1]}/{n}"
                for x, n in (("a", "bench-a.7z"), ("b", "bench-b.zip"))
            }
            wall: dict[str, list[float]] = {"cli": [], "dagster": []}
            cpu: dict[str, list[float]] = {"cli": [], "dagster": []}
            for repeat in range(args.repeats):
                for label in ("cli", "dagster"):
                    work = Path(tmp) / f"{len(chosen)}-{repeat}-{label}"
                    work.mkdir()
                    seconds, cpu_s = (
                        time_cli(urls, work, env)
                        if label == "cli"
                        else time_dagster(urls, sha256, work, env, args.per_source)
                    )
                    wall[label].append(seconds)
                    cpu[label].append(cpu_s)
                    print(
                        f"{len(chosen):4} replays  {label:8} {seconds:7.2f} s wall  {cpu[label][-1]:7.2f} s CPU",
                        flush=True,
                    )
            server.shutdown()
            row = {"replays": len(chosen), "archive_bytes": sum(p.stat().st_size for p in www.iterdir())}
            for kind, figures in (("wall", wall), ("cpu", cpu)):
                best_cli, best_dagster = min(figures["cli"]), min(figures["dagster"])
                row.update(
                    {
                        f"cli_{kind}_s": round(best_cli, 2),
                        f"dagster_{kind}_s": round(best_dagster, 2),
                        f"{kind}_ratio": round(best_dagster / best_cli, 2),
                        f"{kind}_overhead_s": round(best_dagster - best_cli, 2),
                        f"{kind}_overhead_ms_per_replay": round(
                            1000 * (best_dagster - best_cli) / len(chosen), 1
                        ),
                    }
                )
            results.append(row)
    machine = f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\nmachine: {machine}")
    print("| replays | archive MB | measure | CLI s | Dagster s | ratio | overhead s | overhead ms/replay |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for kind in ("wall", "cpu"):
            print(
                f"| {r['replays']} | {r['archive_bytes'] / 1e6:.1f} | {kind} | {r[f'cli_{kind}_s']} | "
                f"{r[f'dagster_{kind}_s']} | {r[f'{kind}_ratio']}x | {r[f'{kind}_overhead_s']} | "
                f"{r[f'{kind}_overhead_ms_per_replay']} |"
            )
    full = results[-1]
    for kind in ("wall", "cpu"):
        verdict = "met" if full[f"{kind}_ratio"] <= TARGET_RATIO else "NOT met"
        print(
            f"target ({kind}, {full['replays']} replays): Dagster <= {TARGET_RATIO}x the CLI -> {verdict} "
            f"({full[f'{kind}_ratio']}x)"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
