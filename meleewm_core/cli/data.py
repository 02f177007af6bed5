"""``meleewm parse``, ``meleewm manifest``, ``meleewm info``: replays in, games and manifest out."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from meleewm_core.store import DataRoot, MissingFolderError, default_replay_folder

PARSE_EPILOG = """\
examples:
  meleewm parse                              # the default local source ($MELEEWM_REPLAYS or ~/Slippi)
  meleewm parse ~/Slippi/2024-05 --source may
  meleewm parse dump.zip --source genesis9   # archives are extracted under raw/<source>/extracted

Failures are data: a replay peppi cannot read becomes a `failed` ledger row naming the error, and
the exit code stays 0. Exit code 1 means nothing could be done (e.g. the folder does not exist).
Re-running parses nothing new; --force parses everything again.
"""


def _data_root(args: argparse.Namespace) -> DataRoot:
    return DataRoot.from_env(args.data)


def run_parse(args: argparse.Namespace) -> int:
    from meleewm_core.parse import parse_paths, read_ledger

    paths = [Path(p) for p in args.paths]
    if not paths:
        try:
            paths = [default_replay_folder()]
        except MissingFolderError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    source = args.source or (paths[0].resolve().name if len(paths) == 1 and paths[0].is_dir() else "local")
    root = _data_root(args)
    try:
        summary = parse_paths(
            paths,
            root,
            source=source,
            workers=args.workers,
            force=args.force,
            timeout_s=args.timeout,
            ledger_flush_s=args.ledger_flush,
            progress=not args.quiet,
        )
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary.describe())
    ledger = read_ledger(root)
    failed = int((ledger["status"] == "failed").sum())
    print(
        f"ledger {root.ledger_path}: {ledger.height} files, {failed} failed in all "
        f"(`meleewm manifest --data {root.root}` counts them by cause)"
    )
    return 0


def run_manifest(args: argparse.Namespace) -> int:
    from meleewm_core.manifest import build_manifest

    root = _data_root(args)
    if not root.ledger_path.exists():
        print(f"error: no ledger at {root.ledger_path}: run `meleewm parse` first", file=sys.stderr)
        return 1
    summary = build_manifest(root)
    print(summary.describe())
    print(f"wrote {root.manifest_path} and {root.meta_json_path}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from meleewm_core.parse import INTERNAL_CHARACTER_NAMES, character_name, describe_replay, stage_name

    path = Path(args.file)
    # peppi prints a Rust backtrace for every panic it turns into an exception; the message is enough.
    os.environ["RUST_BACKTRACE"] = "0"
    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 1
    meta, error = describe_replay(path)
    if meta is None:
        print(f"error: {path}: cannot read: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(meta.model_dump_json(indent=2))
        return 0
    print(f"{path}")
    print(
        f"  md5 {meta.md5}  {meta.size_bytes:,} bytes  Slippi {meta.slippi_version}  started {meta.start_time}"
    )
    print(
        f"  stage {meta.stage} ({stage_name(meta.stage)})  teams {meta.is_teams}  pal {meta.is_pal}  "
        f"timer {meta.timer}s  scene {meta.scene_major}"
    )
    if meta.match_id:
        print(f"  match {meta.match_id} game {meta.game_number} tiebreaker {meta.tiebreaker_number}")
    if meta.parsed:
        print(
            f"  frames {meta.num_frames:,} ({meta.first_frame}..{meta.last_frame}; "
            f"{meta.rollback_rows_dropped:,} rollback rows dropped)"
        )
    else:
        print(f"  frames NOT parsed: {meta.not_parsed_reason}")
    print(f"  end {meta.end_method}  winner port {meta.winner_port} (by {meta.winner_rule})")
    for player in meta.players:
        netplay = f"  {player.netplay_name} [{player.netplay_code}]" if player.netplay_code else ""
        # the internal id is what the frames hold (post.character); Zelda/Sheik and ICs differ
        internal = INTERNAL_CHARACTER_NAMES.get(player.character_internal, player.character_internal)
        print(
            f"  P{player.port}: {character_name(player.character)} ({player.type}; in frames: {internal}){netplay}"
        )
    if meta.cleaned_values:
        print(f"  cleaned (set to null): {meta.cleaned_values}")
    if meta.flagged_values:
        print(f"  flagged (kept): {meta.flagged_values}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data_help = "data root (default: $MELEEWM_DATA or ./data)"

    parse = subparsers.add_parser(
        "parse",
        help="parse replays (.slp files, folders, .zip/.7z archives) into per-game parquet files",
        description="Parse Slippi replays into data/games/<md5>.parquet and record every file in "
        "data/ledger.parquet.",
        epilog=PARSE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parse.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help=".slp files, folders (searched recursively) or .zip/.7z archives; "
        "default: $MELEEWM_REPLAYS or ~/Slippi",
    )
    parse.add_argument("--data", metavar="DIR", help=data_help)
    parse.add_argument(
        "--source",
        metavar="NAME",
        help="source name recorded in the ledger (default: the folder's name, else 'local')",
    )
    parse.add_argument(
        "--workers", type=int, metavar="N", help="parallel worker processes (default: CPU count)"
    )
    parse.add_argument(
        "--force", action="store_true", help="parse again files the ledger already answers for"
    )
    parse.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds one replay may take before its worker is killed (default: 60)",
    )
    parse.add_argument(
        "--ledger-flush",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between ledger saves while parsing (default: 5)",
    )
    parse.add_argument("--quiet", action="store_true", help="no progress bar")
    parse.set_defaults(run=run_parse)

    manifest = subparsers.add_parser(
        "manifest",
        help="build the de-duplicated game table (manifest.parquet, meta.json) and print a summary",
        description="Build data/manifest.parquet and data/meta.json from the ledger: one row per unique "
        "game with training eligibility and its reason; prints games, eligible games, counts by stage "
        "and character, and failures by cause.",
    )
    manifest.add_argument("--data", metavar="DIR", help=data_help)
    manifest.set_defaults(run=run_manifest)

    info = subparsers.add_parser(
        "info",
        help="print one replay's metadata",
        description="Read one .slp file and print its metadata (players, stage, frames, winner, cleaning).",
    )
    info.add_argument("file", metavar="FILE.slp")
    info.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    info.set_defaults(run=run_info)
