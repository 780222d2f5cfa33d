#!/usr/bin/env python3
"""Summarises a `perf record --call-graph dwarf` file of the gateway.

    python3 loadtest/scripts/perf-summary.py FILE [--top 40] [--match pushgate]

Prints the self time per function, then the inclusive time of every
function whose name contains one of the --match words (default: frames of
pushgate, hyper, h2, lapin, rustls, serde_json, tokio, alloc), as a share of
all samples: the ranked hot path used in docs/benchmarks.md.
"""
import argparse
import collections
import re
import subprocess
import sys


def short(sym):
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    sym = re.sub(r"<[^<>]*>", "", sym)  # drop one level of generics
    sym = re.sub(r"<[^<>]*>", "", sym)
    sym = re.sub(r"::\{\{closure\}\}", "", sym)
    sym = sym.replace(" (inlined)", "")
    return sym[:140]


def samples(path):
    out = subprocess.run(["perf", "script", "-i", path, "-F", "comm,ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    stack = []
    for line in out.splitlines():
        if not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        if not line.startswith((" ", "\t")):
            stack = []
            continue
        parts = line.split(None, 1)
        if len(parts) == 2:
            stack.append(short(parts[1]))
    if stack:
        yield stack


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--match", default="pushgate,hyper,h2::,lapin,rustls,serde_json,alloc,malloc,free,memmove,tokio::sync,tracing")
    a = ap.parse_args()
    words = a.match.split(",")
    total = 0
    selfc = collections.Counter()
    incl = collections.Counter()
    for st in samples(a.file):
        total += 1
        selfc[st[0]] += 1
        seen = set()
        for f in st:
            if f not in seen and any(w in f for w in words):
                incl[f] += 1
                seen.add(f)
    if not total:
        sys.exit("no samples")
    print(f"{total} samples\n\nself time:")
    for f, n in selfc.most_common(a.top):
        print(f"{100*n/total:6.2f}%  {f}")
    print("\ninclusive time (frames matching --match):")
    for f, n in incl.most_common(a.top):
        print(f"{100*n/total:6.2f}%  {f}")


if __name__ == "__main__":
    main()
