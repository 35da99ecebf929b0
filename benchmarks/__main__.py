"""``python -m benchmarks run [--quick] [--only NAME ...] [--out DIR]`` and ``python -m benchmarks profile``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import BENCHMARKS
from benchmarks.harness import RunConfig


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Performance benchmarks of the mesh platform.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the benchmarks, print a table, write latest.json and latest.md")
    run.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, two benchmarks at a time, under a minute")
    run.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME", help=f"run only these ({', '.join(BENCHMARKS)})")
    run.add_argument("--out", type=Path, default=RunConfig.out_dir, help="folder for latest.json / latest.md (default: %(default)s)")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.add_argument("--sizes", nargs="+", type=int, default=(), metavar="N", help="only these sizes (products for definitions_load, rows for io_roundtrip, simulation scales for partitions)")
    profile = commands.add_parser("profile", help="cProfile the platform's hot paths, write profile_<name>.txt")
    profile.add_argument("--quick", action="store_true", help="tiny sizes")
    profile.add_argument("--out", type=Path, default=RunConfig.out_dir, help="output folder (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "profile":
        from benchmarks.profiles import run_profiles

        run_profiles(RunConfig(quick=args.quick, out_dir=args.out.resolve()))
        return 0
    from benchmarks.runner import run_all

    config = RunConfig(quick=args.quick, out_dir=args.out.resolve(), verbose=not args.quiet, sizes=tuple(args.sizes))
    results, _ = run_all(config, args.only)
    return 1 if any(r.status == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
