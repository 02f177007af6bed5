"""The ``meleewm`` command line. Each module of this package registers its subcommands;
a subcommand parses its arguments and calls one function of the library."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("data", "model", "evaluate", "lineage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meleewm",
        description="Slippi replays -> parsed games -> manifest -> shards -> trained Melee world models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
