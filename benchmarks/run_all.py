"""
Run every VATT benchmark and write one markdown report with a description of the machine.

    python benchmarks/run_all.py --output benchmarks/RESULTS.md [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_encoders  # noqa: E402
import bench_long_audio  # noqa: E402
from timing import machine_description, set_threads  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny dims, one repetition")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all visible cores)")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    shared = ["--threads", str(threads)] + (["--quick"] if args.quick else [])
    started = datetime.datetime.now(datetime.timezone.utc)
    header = (
        "# VATT benchmarks\n\n"
        f"Run {started:%Y-%m-%d %H:%M} UTC with `benchmarks/run_all.py{' --quick' if args.quick else ''}`.\n\n"
        f"{machine_description()}\n"
    )
    args.output.write_text(header)
    sections = [header]
    for bench in (bench_encoders, bench_long_audio):
        sections.append(bench.main(shared))
        args.output.write_text("\n".join(sections))  # keep what is done if a later benchmark fails
    return "\n".join(sections)


if __name__ == "__main__":
    main()
