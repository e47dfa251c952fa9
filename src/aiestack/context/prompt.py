"""The RAG prompt: a Jinja2 template that turns the question and the numbered sources into one prompt.

The rendered text replaces the last user message of the request (earlier turns and system
messages stay as they were). A template sees:

- ``question`` — the last user turn, as the user wrote it;
- ``sources`` — a list, numbered from 1, of objects with ``n``, ``text``, ``title``, ``source``,
  ``heading`` and ``page`` (the same numbering as the response's ``citations``);
- ``collection`` — the collection's name.

The default template is deliberately *completion-shaped*: instructions, one worked example of
answering from numbered sources with a citation (a base model imitates what it sees; the example's
topic is unrelated to any collection, so an answer copied from it is recognisably not from the
sources), the sources, then ``Question: ...`` and an ``Answer:`` line for the model to continue. An
instruction-tuned model reads it as a request; a small base model (the embedded Gemma 3 270M)
continues it as a document, which is what base models do well. :func:`default_stop` ends generation where a
base model would start inventing the next question or source. When the answer is still not usable,
the Context stage adds an extractive answer (:mod:`aiestack.context.extractive`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from aiestack.context.contextual import display_text
from aiestack.context.extractive import focus
from aiestack.types import Hit

DEFAULT_TEMPLATE = """\
Answer the question using only the numbered sources below. \
Cite every source you use with its number in square brackets, like [1]. \
If the sources do not contain the answer, say that you do not know.

Example:
[1] Opening hours: the museum opens at 9 am and closes at 5 pm; on Sundays it closes at 1 pm.
Question: When does the museum close on Sundays?
Answer: On Sundays the museum closes at 1 pm [1].

Sources:
{% for s in sources %}
[{{ s.n }}] {{ s.title or s.source }}{% if s.heading %} ({{ s.heading }}){% endif %}
{{ s.text }}
{% else %}
(no sources were found)
{% endfor %}

Question: {{ question }}
Answer:"""

#: Stop sequences added to a RAG request that has none of its own (with :func:`default_stop`'s fourth).
STOP = ("\nQuestion:", "\nSources:", "\nExample:")


def default_stop(n_sources: int) -> tuple[str, ...]:
    """:data:`STOP` and the line a base model writes when it goes on to invent source ``n + 1``
    after its answer (``"\n[4]"`` after three sources; seen with the embedded Gemma 3 270M on the
    README's demo question). Four in all: OpenAI's limit."""
    return (*STOP, f"\n[{n_sources + 1}]")


@dataclass(frozen=True, slots=True)
class Source:
    n: int
    text: str
    title: str
    source: str
    heading: str
    page: int | None


def sources_of(hits: Sequence[Hit], *, max_chars: int, question: str = "") -> list[Source]:
    """The hits as numbered sources, each cut to ``max_chars``: to the sentences most about ``question``
    when one is given (:func:`~aiestack.context.extractive.focus`), else to its head."""
    out = []
    for i, hit in enumerate(hits, start=1):
        meta = hit.chunk.metadata
        text = display_text(hit.chunk).strip()
        if len(text) > max_chars:
            text = focus(text, question, max_chars) if question else text[:max_chars].rstrip() + " …"
        page = meta.get("page")
        out.append(
            Source(
                n=i,
                text=text,
                title=str(meta.get("title") or ""),
                source=str(meta.get("source") or hit.chunk.document_id),
                heading=str(meta.get("heading_path") or ""),
                page=page if isinstance(page, int) else None,
            )
        )
    return out


_SAMPLE = Source(n=1, text="A sample source.", title="Sample", source="sample.md", heading="", page=None)


class PromptTemplate:
    """A compiled RAG template. Raises ``ValueError`` at construction for a template that cannot render."""

    def __init__(self, text: str = DEFAULT_TEMPLATE) -> None:
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        try:
            self._template = env.from_string(text)
            self.render("a test question", [_SAMPLE], collection="test")  # fail at start, not per request
        except TemplateError as exc:
            raise ValueError(f"the prompt template does not render: {exc}") from None
        self.text = text

    def render(
        self, question: str, sources: Sequence[Source], *, collection: str, extra: Mapping[str, Any] | None = None
    ) -> str:
        rendered: str = self._template.render(
            question=question, sources=list(sources), collection=collection, **(extra or {})
        )
        return _squeeze(rendered)


def _squeeze(text: str) -> str:
    """At most one blank line in a row (templates with loops leave extra ones)."""
    lines: list[str] = []
    for line in text.splitlines():
        if not line.strip() and lines and not lines[-1].strip():
            continue
        lines.append(line.rstrip())
    return "\n".join(lines).strip()
