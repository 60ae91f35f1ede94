"""`python -m bench [--quick] [--workloads ...] [--systems ...] [--out PATH]`.

Prints a table and writes JSON. Exits 1 only if a workload failed (never on speed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .report import table
from .suite import HIVEGRID, SYSTEMS, WORKLOADS, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, Hivegrid only by default")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=None)
    p.add_argument(
        "--worker",
        choices=("sdk", "raw", "go", "auto"),
        default="auto",
        help="worker processes: the Python SDK, the hand-written Python protocol client, the Go "
        "SDK (sdks/go/bin/bench-worker), or the Python SDK when importable (default)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=N",
        help="override a size: fanout, chain, dynamic, recovery, size, timeout_s, "
        "streams.nodes, streams.streams, streams.processes (e.g. --set fanout=500)",
    )
    p.add_argument("--show", type=Path, metavar="JSON", help="print the table of a stored run")
    p.add_argument("--out", type=Path, default=Path("bench/results/latest.json"))
    args = p.parse_args(argv)
    if args.show:
        print(table(json.loads(args.show.read_text())))
        return 0
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            p.error(f"--set wants KEY=N, got {item!r}")
        overrides[key] = int(value)
    systems = args.systems or (list(HIVEGRID) if args.quick else list(SYSTEMS))
    mode = "quick" if args.quick else "full"
    print(
        f"hivegrid bench ({mode}): {', '.join(args.workloads)} on {', '.join(systems)}", flush=True
    )
    doc = run(
        quick=args.quick,
        workloads=args.workloads,
        systems=systems,
        impl=args.worker,
        overrides=overrides,
    )
    print()
    print(table(doc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    print(f"\nwrote {args.out} ({doc['total_s']:.0f} s)")
    failed = [r for r in doc["results"] if not r.get("ok")]
    if failed:
        print(f"{len(failed)} workload(s) failed; logs in {doc['logs']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
