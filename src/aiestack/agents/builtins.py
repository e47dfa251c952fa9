"""Built-in tools: ``calculator`` (arithmetic on an AST whitelist, never ``eval``), ``fetch_url``
(the SSRF-safe fetcher) and ``python`` (the code sandbox). ``search`` is in :mod:`aiestack.agents.search`.

``fetch_url_tool()`` and ``python_tool()`` make the tools with the limits you choose.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiestack.agents.tools import FunctionTool, ToolOutcome, tool

if TYPE_CHECKING:
    from aiestack.context.urls import URLPolicy
    from aiestack.sandbox import Limits as SandboxLimits

_MAX_EXPRESSION_CHARS = 500
_MAX_POWER_EXPONENT = 1000
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "log": math.log, "exp": math.exp, "sin": math.sin, "cos": math.cos,
    "tan": math.tan, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil,
    "min": min, "max": max,
}  # fmt: skip
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_POWER_EXPONENT:
            raise ValueError(f"exponent {right} is too large (at most {_MAX_POWER_EXPONENT})")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_eval(a) for a in node.args))
    raise ValueError(
        f"unsupported expression {ast.dump(node)[:60]}: use numbers, + - * / // % **, "
        f"pi, e and {', '.join(sorted(_FUNCTIONS))}"
    )


@tool(timeout_s=5.0)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "(3 + 4) * 2 ** 10 / sqrt(2)".

    Args:
        expression: numbers, + - * / // % **, parentheses, pi, e and sqrt log exp sin cos tan abs round floor ceil min max
    """
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression is longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    return str(_eval(tree))


# --------------------------------------------------------------------------- fetch_url

_FETCH_MAX_BYTES = 5 * 1024 * 1024
_FETCH_TIMEOUT_S = 20.0


def fetch_url_tool(
    policy: URLPolicy | None = None, *, name: str = "fetch_url", max_result_chars: int = 20_000
) -> FunctionTool:
    """A tool that fetches a web page through the SSRF-safe fetcher (:mod:`aiestack.context.urls`).

    Only http(s) URLs on public addresses are fetched (every redirect re-checked, the address
    connected to is the one checked), within ``policy``'s size and time limits (by default 5 MB
    and 20 s). HTML comes back as Markdown, other text as it is; a refusal is a tool error.
    """
    from aiestack.context.urls import URLPolicy as _Policy

    rules = policy or _Policy(max_bytes=_FETCH_MAX_BYTES, timeout_s=_FETCH_TIMEOUT_S)

    def fetch_url(url: str) -> str:
        """Fetch a web page (http or https, public addresses only) and return its text; HTML comes back as Markdown.

        Args:
            url: the full http(s) URL
        """
        from aiestack.context.loaders import load_bytes
        from aiestack.context.urls import fetch, kind_for_content_type

        fetched = fetch(url, rules)
        kind = kind_for_content_type(fetched.content_type, fetched.url)
        if kind not in ("html", "markdown", "text", "records", "code"):
            kind = "text"
        loaded = load_bytes(fetched.body, source=fetched.url, kind=kind)
        text = "\n\n".join(doc.text for doc in loaded)
        return f"URL: {fetched.url}\n\n{text}"

    return FunctionTool(
        fetch_url, name=name, timeout_s=rules.timeout_s + 5, max_result_chars=max_result_chars
    )


# --------------------------------------------------------------------------- python

_PYTHON_DOC = """Run Python 3 code in a sandbox and return what it printed (stdout and stderr).

    The code runs in a fresh process with no network, no environment variables, a private
    temporary working directory (the only place it may write) and limits on time, memory,
    file size and processes. Print what you need to see.

    Args:
        code: a complete Python program
    """


def python_tool(limits: SandboxLimits | None = None, *, name: str = "python") -> FunctionTool:
    """A tool that runs model-written Python in :class:`aiestack.sandbox.Sandbox` (see docs/agents.md for what it stops).

    The result is the program's stdout and stderr (each cut to the tool's result limit); a
    non-zero exit, a kill on timeout or a refused operation is a tool error the model sees.
    """
    from aiestack.sandbox import Limits as _Limits
    from aiestack.sandbox import Sandbox

    sandbox = Sandbox(limits or _Limits(timeout_s=10.0, memory_mb=512))

    async def python(code: str) -> ToolOutcome:
        result = await sandbox.run_python(code)
        parts = []
        if result.stdout:
            parts.append(f"stdout:\n{result.stdout.rstrip()}")
        if result.stderr:
            parts.append(f"stderr:\n{result.stderr.rstrip()}")
        text = "\n".join(parts) or "(no output)"
        error: str | None = None
        if result.timed_out:
            error = f"the code ran past {sandbox.limits.timeout_s:g} s and was killed"
        elif result.exit_code != 0:
            last = result.stderr.strip().splitlines()[-1:] or [""]
            error = f"the code exited with status {result.exit_code}" + (f": {last[0]}" if last[0] else "")
        if error is not None:
            text = f"Error: {error}\n{text}"
        return ToolOutcome(text, error=error)

    python.__doc__ = _PYTHON_DOC
    return FunctionTool(python, name=name, timeout_s=sandbox.limits.timeout_s + 10)
