"""
Run every VATT benchmark and write one markdown report with a description of the machine.

    python benchmarks/run_all.py --output benchmarks/RESULTS.md [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_encoders  # noqa: E402
import bench_long_audio  # noqa: E402
from timing import load_average, machine_description, set_threads  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny dims, one repetition")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all visible cores)")
    parser.add_argument(
        "--case-budget",
        type=float,
        default=10.0,
        help="seconds of timed rounds per encoder comparison before it stops early (default 10; at least one round)",
    )
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    shared = ["--threads", str(threads)] + (["--quick"] if args.quick else [])
    started = datetime.datetime.now(datetime.timezone.utc)
    header = (
        "# VATT benchmarks\n\n"
        f"Run {started:%Y-%m-%d %H:%M} UTC with `benchmarks/run_all.py{' --quick' if args.quick else ''}` "
        f"(encoder comparisons stop after {args.case_budget:g} s of timed rounds).\n\n"
        f"{machine_description()}\n"
    )
    args.output.write_text(header)
    sections = [header]
    start = time.perf_counter()
    for bench, extra in ((bench_encoders, ["--case-budget", str(args.case_budget)]), (bench_long_audio, [])):
        sections.append(bench.main(shared + extra))
        args.output.write_text("\n".join(sections))  # keep what is done if a later benchmark fails
    sections.append(f"Whole run: {(time.perf_counter() - start) / 60:.1f} min; {load_average()} at the end.\n")
    args.output.write_text("\n".join(sections))
    return "\n".join(sections)


if __name__ == "__main__":
    main()
