"""One sandbox for code a model wrote: the functional-correctness metric and the agents' python tool.

``await Sandbox(Limits(...)).run_python(code)`` runs ``code`` in a separate ``python -I`` process and
returns a :class:`Result` (exit code, stdout, stderr, whether it timed out, and the :class:`Isolation`
that was in force). What is enforced, layer by layer:

Always (any POSIX system):
  - a separate process in its own session, killed with its process group on timeout (and on
    cancellation);
  - rlimits: CPU seconds, address space (memory), file size, open files, processes, no core dumps;
  - a private temporary directory as working directory, ``HOME`` and ``TMPDIR``, deleted afterwards;
  - an empty environment (``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` only) and ``python -I`` (no
    ``PYTHON*`` variables, no user site-packages, no current directory on ``sys.path``);
  - an audit hook, installed before the code runs, that refuses sockets, name lookups, starting
    processes, ``ctypes`` and opening files for writing outside the private directory. Audit hooks
    cannot be removed from Python, but code that reaches native code some other way is not stopped
    by them: on their own they are a guard against accidents, not a boundary.

On Linux where ``unshare`` can create namespaces (as root, or where unprivileged user namespaces are
allowed; :func:`probe` finds out), additionally:
  - as root, the process first drops to user ``nobody`` (uid 65534), so the process limit applies
    (the kernel exempts root from it) and no file is writable by ownership;
  - new user, network, mount and PID namespaces: no network interfaces at all (not even loopback);
    every mount read-only except the private directory; the process sees only its own processes,
    and when the sandbox's first process is killed the kernel kills every process in it;
  - no capabilities (bounding set emptied, ``no_new_privs``, the "root is privileged" rule off), so
    the code cannot remount anything writable again.

What it does not stop, even then: reading files the user ``nobody`` may read (the code can read
world-readable files such as the installed packages), CPU use of up to the CPU limit, kernel
exploits, and side channels. Run hostile code in a VM or gVisor as well. :attr:`Isolation.notes`
says in words what was not in force on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The user the sandbox runs as when started by root.
NOBODY = 65534

#: Run inside the namespaces, before the code: make every mount read-only except the work
#: directory, drop every capability, then exec Python on the program. argv: workdir, python, program.
_LAUNCHER = r"""
import ctypes, os, sys
work, python, program = sys.argv[1:4]
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
KEEP = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024,
        "nodiratime": 2048, "relatime": 2097152, "strictatime": 1 << 24}
def mount(src, target, flags):
    if libc.mount(src, target.encode(), None, flags, None) != 0:
        raise OSError(ctypes.get_errno(), "mount " + target)
mount(work.encode(), work, MS_BIND)
points = []
with open("/proc/self/mountinfo") as f:
    for line in f:
        parts = line.split()
        points.append((parts[4].encode().decode("unicode_escape"), parts[5].split(",")))
failed = []
for point, opts in points:
    if point == work:
        continue
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for opt in opts:
        flags |= KEEP.get(opt, 0)
    try:
        mount(None, point, flags)
    except OSError:
        failed.append(point)
for point in failed:  # a mount under one that failed may still be writable: refuse to go on
    if os.access(point, os.W_OK) and point != work and not point.startswith(("/proc", "/sys", "/dev")):
        sys.exit("sandbox: could not make " + point + " read-only")
PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS = 24, 28, 38
for cap in range(64):
    libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
libc.prctl(PR_SET_SECUREBITS, 0x3F, 0, 0, 0)  # noroot, no_setuid_fixup, keep_caps off: all locked
libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
os.chdir(work)
os.execve(python, [python, "-I", program], {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": work, "TMPDIR": work})
"""

#: Installed before the code runs. Refuses network, new processes, ctypes and writes outside WORK.
_PRELUDE = """\
import sys as _s, os as _o
def _aiestack_sandbox(event, args, _work=_o.path.realpath({work!r}), _o=_o):
    if event.startswith(("socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.fork", "os.system",
                         "os.spawn", "pty.", "ctypes.", "_posixsubprocess")):
        if event not in ("socket.gethostname",):
            raise PermissionError("the sandbox does not allow " + event)
    elif event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (_o.O_WRONLY | _o.O_RDWR | _o.O_CREAT | _o.O_APPEND | _o.O_TRUNC))
        if not writing or isinstance(path, int):
            return
        real = _o.path.realpath(_o.fsdecode(path))
        if real != _work and not real.startswith(_work + _o.sep) and real != "/dev/null":
            raise PermissionError("the sandbox allows writing only inside its working directory")
    elif event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod",
                   "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "os.removexattr", "os.setxattr"):
        for path in args:
            if isinstance(path, (str, bytes)):
                real = _o.path.realpath(_o.fsdecode(path))
                if real != _work and not real.startswith(_work + _o.sep):
                    raise PermissionError("the sandbox allows changes only inside its working directory")
_s.addaudithook(_aiestack_sandbox)
del _aiestack_sandbox, _s, _o
"""

_OUTPUT_LIMIT = 1_000_000  # bytes of stdout / stderr kept


@dataclass(frozen=True, slots=True)
class Limits:
    """What one run may use."""

    timeout_s: float = 10.0  # wall time; CPU time is capped at the same number of seconds (rounded up)
    memory_mb: int = 512  # address space
    file_mb: int = 16  # largest file it may write
    open_files: int = 64
    processes: int = 16  # counted per user: effective when the sandbox runs as nobody (see Isolation)


@dataclass(frozen=True, slots=True)
class Isolation:
    """Which layers were in force for a run (and :func:`probe` for this machine)."""

    namespaces: bool  # user + network + mount + PID namespaces, read-only mounts, no capabilities
    user: str  # "nobody" when started as root and dropped, else the caller's user
    notes: tuple[str, ...] = ()  # what was not in force, in words

    @property
    def network(self) -> str:
        return "namespace+audit-hook" if self.namespaces else "audit-hook"


@dataclass(frozen=True, slots=True)
class Result:
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    isolation: Isolation
    files: dict[str, str] = field(default_factory=dict)  # reserved: files the run left, when asked

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


async def probe(python: str = sys.executable) -> Isolation:
    """What this machine allows for ``python``: try the namespaces once (a fraction of a second)."""
    tool = shutil.which("unshare")
    notes: list[str] = []
    root = os.geteuid() == 0
    setpriv = shutil.which("setpriv") if root else None
    if tool is None:
        notes.append("no unshare(1): no namespaces; network, filesystem and process limits rely on the audit hook")
        return Isolation(False, "root" if root else "caller", tuple(notes))
    user = "caller"
    if root:
        if setpriv is not None and await _succeeds([*_drop(True, setpriv), tool, *_UNSHARE, python, "-I", "-c", "pass"]):
            user = "nobody"
        else:
            user = "root"
            notes.append(
                f"root could not drop to nobody (uid {NOBODY} cannot run {python}, or no setpriv): the code runs as "
                "root in its user namespace without capabilities; the kernel exempts root from the process "
                "limit, so processes are bounded by the PID namespace and the audit hook only"
            )
    if not await _succeeds([*_drop(user == "nobody", setpriv), tool, *_UNSHARE, "true"]):
        notes.append(
            "unshare of user/network/mount/PID namespaces is not permitted here: no network namespace, "
            "the filesystem is protected by the audit hook only, and the process limit counts the caller's processes"
        )
        return Isolation(False, "root" if root else "caller", tuple(notes))
    if user == "caller":
        notes.append("the process limit counts every process of the calling user")
    return Isolation(True, user, tuple(notes))


async def _succeeds(argv: list[str]) -> bool:
    with contextlib.suppress(OSError):
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return await proc.wait() == 0
    return False


_UNSHARE = ("--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--")


def _drop(root: bool, setpriv: str | None) -> list[str]:
    if not root or setpriv is None:
        return []
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def _rlimits(limits: Limits) -> Callable[[], None]:
    """The ``preexec_fn`` that applies ``limits`` in the child before anything else runs."""

    def apply() -> None:
        memory = limits.memory_mb * 1024 * 1024
        cpu = int(limits.timeout_s) + 1
        size = limits.file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


class Sandbox:
    """Runs Python code under :class:`Limits`; see the module doc for what is and is not stopped."""

    def __init__(self, limits: Limits | None = None, *, python: str = sys.executable) -> None:
        self.limits = limits or Limits()
        self.python = python
        self._isolation: Isolation | None = None  # probed once per sandbox, on first use

    async def isolation(self) -> Isolation:
        if self._isolation is None:
            self._isolation = await probe(self.python)
        return self._isolation

    async def run_python(
        self, code: str, *, files: Mapping[str, str] | None = None, audit_hook: bool = True
    ) -> Result:
        """Run ``code`` (with ``files`` written beside it first) and return what happened.

        ``audit_hook=False`` leaves out the in-process layer: for tests of the OS layers beneath it.
        """
        isolation = await self.isolation()
        drop = isolation.user == "nobody"
        with tempfile.TemporaryDirectory(prefix="aiestack-sandbox-") as tmp:
            work = os.path.realpath(tmp)
            for name, text in (files or {}).items():
                target = Path(work, name).resolve()
                if not str(target).startswith(work + os.sep):
                    raise ValueError(f"sandbox file {name!r} is outside the working directory")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            program = Path(work, "program.py")
            prelude = _PRELUDE.format(work=work) + "\n" if audit_hook else ""
            program.write_text(prelude + code, encoding="utf-8")
            if isolation.namespaces:
                if drop:
                    _give_to(work, NOBODY)
                argv = [*_drop(drop, shutil.which("setpriv")), "unshare", *_UNSHARE, self.python, "-I", "-c", _LAUNCHER,
                        work, self.python, str(program)]
            else:
                argv = [self.python, "-I", str(program)]
            env = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": work, "TMPDIR": work}
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=work,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_rlimits(self.limits),
            )
            timed_out = False
            try:
                out, err = await asyncio.wait_for(proc.communicate(), timeout=self.limits.timeout_s)
            except TimeoutError:
                timed_out = True
                _kill(proc.pid)
                out, err = b"", b""
                await proc.wait()
            except asyncio.CancelledError:
                _kill(proc.pid)
                raise
            finally:
                _kill(proc.pid)  # anything it left in its process group (without a PID namespace)
        return Result(
            exit_code=None if timed_out else proc.returncode,
            stdout=out[-_OUTPUT_LIMIT:].decode("utf-8", "replace"),
            stderr=err[-_OUTPUT_LIMIT:].decode("utf-8", "replace"),
            timed_out=timed_out,
            isolation=isolation,
        )


def _kill(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _give_to(work: str, uid: int) -> None:
    """Hand the work directory (and what was written into it) to ``uid``, the user the code runs as."""
    for dirpath, dirnames, filenames in os.walk(work):
        os.chown(dirpath, uid, uid)
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)
