"""The ``trioudp`` command: ``python -m trioudp demo``."""

from __future__ import annotations

import argparse
import sys
from functools import partial

import trio

from ._demo import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="trioudp", description="Safe, fast UDP messaging for Trio."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="watch a server, clients and a vandal talk on loopback (about 5 s)"
    )
    demo.add_argument(
        "--pace",
        type=float,
        default=0.6,
        metavar="SECONDS",
        help="pause between steps (default 0.6)",
    )
    arguments = parser.parse_args(argv)
    if arguments.pace < 0:
        parser.error("--pace must not be negative")
    ok = trio.run(partial(run_demo, pace=arguments.pace))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
