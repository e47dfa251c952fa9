"""The code sandbox: each escape we could think of is tried, and refused (issue #13, defect 9)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiestack.sandbox import Limits, Sandbox

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(Limits(timeout_s=5, memory_mb=256))


async def test_code_runs_and_can_use_its_directory(sandbox: Sandbox) -> None:
    r = await sandbox.run_python("open('a.txt','w').write('ok'); print(open('a.txt').read())", files={"data/x.txt": "x"})
    assert r.ok and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize(
    "code",
    [
        "open({target!r}, 'w').write('x')",
        "import os; os.close(os.open({target!r}, os.O_WRONLY | os.O_CREAT))",
        "import pathlib; pathlib.Path({target!r}).write_text('x')",
        "import os; os.symlink('/etc/passwd', 'l'); open({target!r}, 'a')",
        "import os; os.mkdir({target!r})",
        "import shutil; shutil.copy('program.py', {target!r})",
        "open('../' + {name!r}, 'w')",
    ],
)
async def test_writing_outside_its_directory_is_refused(sandbox: Sandbox, tmp_path: Path, code: str) -> None:
    target = tmp_path / "escaped"
    r = await sandbox.run_python(code.format(target=str(target), name="escaped-" + str(os.getpid())))
    assert r.exit_code != 0
    assert not target.exists()
    assert not (Path(os.path.realpath("/tmp")) / f"escaped-{os.getpid()}").exists()


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("import socket; socket.create_connection(('127.0.0.1', 5432), timeout=1)", "socket"),
        ("import subprocess; subprocess.run(['sh', '-c', 'true'])", "subprocess"),
        ("import os; os.system('true')", "os.system"),
        ("import os; os.execv('/bin/sh', ['sh'])", "os.exec"),
        ("import ctypes; ctypes.CDLL(None)", "ctypes"),
    ],
)
async def test_network_processes_and_native_calls_are_refused(sandbox: Sandbox, code: str, refused: str) -> None:
    r = await sandbox.run_python(code)
    assert r.exit_code != 0 and refused in r.stderr and "PermissionError" in r.stderr


async def test_environment_is_empty(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIESTACK_SECRET_FOR_TEST", "leak")
    r = await sandbox.run_python("import os; print(sorted(os.environ))")
    assert r.ok and "AIESTACK_SECRET_FOR_TEST" not in r.stdout
    assert set(eval(r.stdout)) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE"}


async def test_timeout_kills_it(sandbox: Sandbox) -> None:
    r = await Sandbox(Limits(timeout_s=1)).run_python("while True: pass")
    assert r.timed_out and not r.ok  # killed by the sandbox, not ended by itself


async def test_memory_file_size_and_open_file_limits(sandbox: Sandbox) -> None:
    r = await sandbox.run_python("x = bytearray(1024 * 1024 * 1024)")
    assert r.exit_code != 0 and "MemoryError" in r.stderr
    r = await Sandbox(Limits(file_mb=1)).run_python("open('big', 'wb').write(b'x' * 4 * 1024 * 1024)")
    assert r.exit_code != 0
    r = await Sandbox(Limits(open_files=16)).run_python("fs = [open('f%d' % i, 'w') for i in range(64)]")
    assert r.exit_code != 0 and "Too many open files" in r.stderr


# ------------------------------------------------------------------ the OS layers, beneath the audit hook


async def _namespaced(sandbox: Sandbox) -> None:
    if not (await sandbox.isolation()).namespaces:
        pytest.skip("this machine does not allow user/network/mount namespaces: " + "; ".join((await sandbox.isolation()).notes))


async def test_without_the_audit_hook_the_filesystem_is_read_only(sandbox: Sandbox, tmp_path: Path) -> None:
    await _namespaced(sandbox)
    os.chmod(tmp_path, 0o777)
    target = tmp_path / "escaped"
    r = await sandbox.run_python(f"open({str(target)!r}, 'w').write('x')", audit_hook=False)
    assert r.exit_code != 0 and "Read-only file system" in r.stderr, r.stderr
    assert not target.exists()
    r = await sandbox.run_python("open('inside', 'w').write('x')", audit_hook=False)
    assert r.ok, r.stderr
    r = await sandbox.run_python("import os; os.system('mount -o remount,rw / 2>&1; touch /escaped-x 2>&1')", audit_hook=False)
    assert not Path("/escaped-x").exists()


async def test_without_the_audit_hook_there_is_no_network(sandbox: Sandbox) -> None:
    await _namespaced(sandbox)
    code = "import socket; socket.create_connection(('127.0.0.1', 6379), timeout=2)"
    r = await sandbox.run_python(code, audit_hook=False)
    assert r.exit_code != 0 and ("unreachable" in r.stderr or "refused" in r.stderr), r.stderr


async def test_without_the_audit_hook_children_die_with_it(sandbox: Sandbox, tmp_path: Path) -> None:
    await _namespaced(sandbox)
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nelse:\n    print(os.getpid()); time.sleep(60)\n"
    r = await Sandbox(Limits(timeout_s=1)).run_python(code, audit_hook=False)
    assert r.timed_out
    leftover = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).endswith("program.py") and "aiestack-sandbox-" in _cmdline(p)]
    assert leftover == []


def _cmdline(p: Path) -> str:
    try:
        return p.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""
