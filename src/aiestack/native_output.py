"""What native libraries print while a model loads, kept off the terminal unless asked for.

llama.cpp writes its log from C straight to file descriptor 2 (``llama_kv_cache_iswa: using
full-size SWA cache`` and the like), whatever ``verbose=False`` tells llama-cpp-python, and
transformers draws a "Loading weights" progress bar. :func:`quiet_native_output` points fd 2 at a
temporary file for the duration (the C library's writes included), then restores it:

- the captured lines that look like a native library's log (``name: text``, or a row of progress
  dots) are dropped; every other line (another thread's warning, a traceback) is written back to
  the real stderr, so nothing else printed during the load is lost;
- when the ``with`` block raises, everything captured is written back (it explains the failure);
- with ``AIESTACK_VERBOSE=1`` (``aiestack --verbose``) nothing is redirected: the libraries print
  as they always do.

fd 2 belongs to the whole process, so one lock serialises the redirections (two models loading at
once wait for each other; loads compete for the CPU anyway).
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr

#: The environment variable that lets native output through (set by ``aiestack --verbose``).
VERBOSE_ENV = "AIESTACK_VERBOSE"
#: A native library's log line: ``function_name: text`` (llama.cpp, ggml, gguf), progress dots, a progress bar.
_NATIVE = re.compile(r"^\s*(?:[a-z_][a-z0-9_.]*:|\.+\s*$|.*\|[#█▏▎▍▌▋▊▉ ]*\|)")
_FD2_LOCK = threading.Lock()


def verbose() -> bool:
    """Whether native output should reach the terminal (``AIESTACK_VERBOSE`` set to a true value)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@contextmanager
def quiet_native_output() -> Iterator[None]:
    """Capture fd 2 for the block; drop native log lines, write the rest back (see the module docstring)."""
    if verbose():
        yield
        return
    with _FD2_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        python_side = io.StringIO()  # tqdm writes to sys.stderr, which need not be fd 2 (a test runner's buffer)
        failed = False
        try:
            os.dup2(sink.fileno(), 2)
            with redirect_stderr(python_side):
                yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace") + python_side.getvalue()
            kept = text if failed else "".join(_foreign_lines(text))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _foreign_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` that are not a native library's log (progress-bar redraws split on ``\\r``)."""
    for line in text.splitlines(keepends=True):
        last = line.rstrip("\n").split("\r")[-1]
        if last.strip() and not _NATIVE.match(last):
            yield last + "\n"
