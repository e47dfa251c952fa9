"""CLI cold start: how long `aiestack --help` and a typical command take to start, against bare Python.

Each command runs ``--runs`` times in a fresh interpreter (median wall time), with the anchor
``python -c pass`` measured in the same run, so the ratio survives a loaded machine. The import
part is what ``python -X importtime`` reports for the whole process (cumulative, top-level
modules, the slowest first). ``tests/cli/test_cold_start.py`` pins which heavy modules
``aiestack --help`` must not import.

    .venv/bin/python bench/cli_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "python -c pass (anchor)": ["-c", "pass"],
    "aiestack --help": ["-m", "aiestack", "--help"],
    "aiestack keys list": ["-m", "aiestack", "keys", "list"],
    "aiestack search --help": ["-m", "aiestack", "search", "--help"],
}


def _run(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, capture_output=True, check=False, timeout=300)
    return (time.perf_counter() - started) * 1000


def _imports(args: list[str], env: dict[str, str]) -> list[tuple[int, str]]:
    done = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, capture_output=True, text=True, check=False)
    out = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and not m.group(2):  # top level only
            out.append((int(m.group(1)), m.group(3)))
    return sorted(out, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AIESTACK_DATA_DIR": home, "HF_HUB_OFFLINE": "1"}
        env.pop("AIESTACK_CONFIG", None)
        times = {name: [_run(argv, env) for _ in range(args.runs)] for name, argv in COMMANDS.items()}
        anchor = statistics.median(times["python -c pass (anchor)"])
        print(f"load average {os.getloadavg()[0]:.1f}; {args.runs} runs each, median wall time\n")
        print("| command | median ms | × bare python |")
        print("|---|---:|---:|")
        for name, values in times.items():
            print(f"| {name} | {statistics.median(values):.0f} | {statistics.median(values) / anchor:.1f} |")
        for name in ("aiestack --help", "aiestack keys list"):
            top = _imports(COMMANDS[name], env)
            total = sum(us for us, _ in top) / 1000
            slowest = ", ".join(f"{mod} {us / 1000:.0f}" for us, mod in top[:8])
            print(f"\n{name}: imports {total:.0f} ms in all; slowest top-level (ms): {slowest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
