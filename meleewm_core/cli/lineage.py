"""``meleewm lineage RUN_DIR`` and ``meleewm lineage --game MD5 [--data DIR]``."""

from __future__ import annotations

import argparse
import sys

from meleewm_core.lineage import LineageError, game_lineage, run_lineage
from meleewm_core.store import DataRoot


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lineage",
        help="which games fed a checkpoint, or which runs used a game",
        description=(
            "With RUN_DIR (runs/<experiment>/<run-id>/): print the sources and the games (md5, role, "
            "source, file) that trained and validated that run. With --game MD5: list every run under "
            "the data root that trained or validated on that game."
        ),
    )
    parser.add_argument("run_dir", nargs="?", help="a run folder holding manifest.json")
    parser.add_argument("--game", metavar="MD5", help="list the runs that used this game")
    parser.add_argument("--data", metavar="DIR", help="data root (default: MELEEWM_DATA or ./data)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.run_dir) == bool(args.game):
        print("meleewm lineage: give either RUN_DIR or --game MD5", file=sys.stderr)
        return 2
    root = DataRoot.from_env(args.data) if (args.data or args.game) else None
    if args.game:
        uses = game_lineage(args.game.lower(), root)
        if not uses:
            print(f"no run under {root.runs_dir} used game {args.game}")
            return 1
        print(f"game {args.game} was used by {len(uses)} run(s):")
        for use in uses:
            print(f"  {use.role:5}  {use.experiment}/{use.run_id}  {use.run_dir}")
        return 0
    try:
        lineage = run_lineage(args.run_dir, root)
    except LineageError as error:
        print(f"meleewm lineage: {error}", file=sys.stderr)
        return 1
    print(
        f"run {lineage.run_dir} (experiment {lineage.experiment}, data fingerprint {lineage.data_fingerprint})"
    )
    print(f"{len(lineage.games)} games from {len(lineage.sources)} source(s):")
    for source, count in sorted(lineage.sources.items()):
        print(f"  {source:30} {count:6} games")
    if lineage.unknown_games:
        print(f"  (not in the ledger: {lineage.unknown_games} games)")
    print("games:")
    print(f"  {'md5':32}  {'role':5}  {'source':20}  file")
    for game in lineage.games:
        for location in game.locations:
            print(f"  {game.md5:32}  {game.role:5}  {location.source:20}  {location.path}")
        if not game.locations:
            print(f"  {game.md5:32}  {game.role:5}  {'(unknown)':20}  -")
    return 0
