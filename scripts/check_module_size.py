"""Fail when any Python module under a folder has more than N lines (ARCHITECTURE.md §3)."""

from __future__ import annotations

import sys
from pathlib import Path


def main(root: str, limit: int) -> int:
    too_big = []
    for path in sorted(Path(root).rglob("*.py")):
        n = sum(1 for _ in path.open(encoding="utf-8"))
        if n > limit:
            too_big.append((path, n))
    for path, n in too_big:
        print(f"{path}: {n} lines (limit {limit}); split it by concept", file=sys.stderr)
    print(f"module size: {'FAIL' if too_big else 'ok'} (limit {limit} lines)")
    return 1 if too_big else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
