"""Summarize py-spy's folded stacks (`--format raw`): the functions with the most samples,
self and inclusive. `python -m bench.folded .bench-out/n1000-*/operator.folded [--match TEXT]`"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarize(path: Path, top: int = 30, match: str | None = None) -> str:
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if match and not any(match in f for f in frames):
            continue
        total += n
        self_[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    out = [f"{total} samples"]
    out.append("-- self --")
    out += [f"{n / total:6.1%}  {f}" for f, n in self_.most_common(top)]
    out.append("-- inclusive --")
    out += [f"{n / total:6.1%}  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.folded")
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match")
    args = parser.parse_args()
    print(summarize(args.path, args.top, args.match))


if __name__ == "__main__":
    main()
