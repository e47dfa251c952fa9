"""CLI cold start: how long `aiestack --help` and a typical command take to start, against bare Python.

Each command runs ``--runs`` times in a fresh interpreter (median wall time), with the anchor
``python -c pass`` measured in the same run, so the ratio survives a loaded machine. The import
part is what ``python -X importtime`` reports for the whole process (cumulative, top-level
modules, the slowest first). ``tests/cli/test_cold_start.py`` pins which heavy modules
``aiestack --help`` must not import.

The search rows time ``aiestack search`` on a small collection (ingested first, not timed): in-process
(``--local``: the command opens the store and loads the embedding model) and through a running
``aiestack serve`` on the same data directory (started by the bench on a free port, warmed by one
search; the command reaches it through ``AIESTACK_URL``).

    .venv/bin/python bench/cli_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
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


SEARCH = ["-m", "aiestack", "search", "how do I revoke a key", "-c", "bench", "-k", "3"]
DOC = """# Keys

Create a key with `aiestack keys create --tenant acme`. Revoke it with `aiestack keys revoke ID`:
the key stops working at once. Keys carry limits: requests and tokens per minute, and a budget.
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _search_rows(env: dict[str, str], home: str, runs: int) -> dict[str, list[float]]:
    """``aiestack search`` in-process and through a running server on the same data directory."""
    import httpx

    docs = os.path.join(home, "docs")
    os.makedirs(docs, exist_ok=True)
    with open(os.path.join(docs, "keys.md"), "w", encoding="utf-8") as f:
        f.write(DOC)
    subprocess.run([sys.executable, "-m", "aiestack", "ingest", docs, "-c", "bench"], env=env, check=True,
                   capture_output=True, timeout=600)
    rows = {"aiestack search (in-process, --local)": [_run([*SEARCH, "--local"], env) for _ in range(runs)]}
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "aiestack", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("aiestack serve did not start")
            time.sleep(0.5)
        remote = {**env, "AIESTACK_URL": f"http://127.0.0.1:{port}"}
        warm = subprocess.run([sys.executable, *SEARCH], env=remote, capture_output=True, text=True, timeout=300)
        if warm.returncode != 0 or f"127.0.0.1:{port}" not in warm.stdout:
            raise RuntimeError(f"the search through the server failed: {warm.stdout[-500:]} {warm.stderr[-500:]}")
        rows["aiestack search (through a running server)"] = [_run(SEARCH, remote) for _ in range(runs)]
    finally:
        server.terminate()
        server.wait(timeout=60)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AIESTACK_DATA_DIR": home, "HF_HUB_OFFLINE": "1"}
        env.pop("AIESTACK_CONFIG", None)
        times = {name: [_run(argv, env) for _ in range(args.runs)] for name, argv in COMMANDS.items()}
        times.update(_search_rows(env, home, args.runs))
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
