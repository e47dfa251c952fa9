"""Text in and text out of an embedded model: rendering a chat into a prompt, and finding where the answer ends.

A GGUF model is a text completer. A chat request has to become one prompt string, and the streamed
continuation has to stop where the model starts writing the next turn. These are pure functions so
they can be tested without a model.

Formats (``chat_format`` in ``[models.NAME]``):

``template``
    The GGUF's own chat template (``tokenizer.chat_template``, a Jinja2 template), rendered with
    llama-cpp-python's ``Jinja2ChatFormatter`` so template quirks (``raise_exception``,
    ``strftime_now``) behave as they do in llama.cpp. Use it for instruction-tuned models: set
    ``instruct = true`` and ``path`` to e.g. a Gemma 3 *-it* or Qwen2.5 *-Instruct* GGUF. The rendered
    prompt holds the template's special tokens as text, so it is tokenized with special-token parsing.

``transcript``
    A plain-text dialogue for base models::

        <system text, or a one-line preamble>

        User: What is the capital of Italy?
        Assistant: The capital of Italy is Rome.
        User: <question>
        Assistant:

    with ``"\\nUser:"`` and ``"\\nAssistant:"`` added as stop sequences, so generation ends where the model
    would start inventing the user's next turn. The one demonstration exchange is deliberate: tried on the
    packaged Gemma 3 270M base model at temperature 0, a transcript without it mostly echoed the question
    back ("User: Name three fruits. Assistant: Name three fruits."), while with it the model answered
    ("Apples, oranges, and grapes.", "2+2 = 4.", "Tokyo."). The leading space the model writes after
    ``Assistant:`` is dropped from the answer.

``raw``
    The texts of all messages concatenated, as a plain completion prompt (no stop sequences added).

``auto`` (the default)
    ``template`` for an instruct model whose GGUF has a chat template; for a base model, ``raw`` when the
    conversation is a single user message (so ``aiestack chat "The capital of France is"`` continues the
    sentence), else ``transcript``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiestack.types import Message

ChatFormat = Literal["auto", "transcript", "template", "raw"]

TRANSCRIPT_PREAMBLE = "A conversation between a user and a helpful assistant."
TRANSCRIPT_DEMO = (
    Message(role="user", content="What is the capital of Italy?"),
    Message(role="assistant", content="The capital of Italy is Rome."),
)
TRANSCRIPT_STOPS = ("\nUser:", "\nAssistant:")
_SPEAKERS = {"user": "User", "assistant": "Assistant", "tool": "Tool"}


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A prompt ready to tokenize.

    ``special``: parse special-token text (``<start_of_turn>``) as special tokens — only for template
    output, never for user text rendered as plain text (a user could otherwise forge turn markers).
    ``add_bos``: prepend the model's BOS token when tokenizing (a template usually writes it itself).
    ``strip_leading_space``: drop the space the model writes after a ``Speaker:`` label.
    """

    text: str
    stop: tuple[str, ...] = ()
    format: ChatFormat = "raw"
    special: bool = False
    add_bos: bool = True
    strip_leading_space: bool = False


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """A GGUF's chat template with the token texts it refers to."""

    source: str
    bos_token: str = ""
    eos_token: str = ""


def resolve_format(
    messages: Sequence[Message], chat_format: ChatFormat, *, instruct: bool, has_template: bool
) -> ChatFormat:
    """Decide which concrete format ``auto`` means for this conversation and model."""
    if chat_format != "auto":
        return chat_format
    if instruct and has_template:
        return "template"
    if len(messages) == 1 and messages[0].role == "user":
        return "raw"
    return "transcript"


def render_prompt(
    messages: Sequence[Message],
    chat_format: ChatFormat = "auto",
    *,
    instruct: bool = False,
    template: ChatTemplate | None = None,
) -> RenderedPrompt:
    """Render ``messages`` in ``chat_format`` (see the module docstring for what each format does)."""
    if not messages:
        raise ValueError("a chat request needs at least one message")
    concrete = resolve_format(messages, chat_format, instruct=instruct, has_template=template is not None)
    if concrete == "raw":
        return render_raw(messages)
    if concrete == "transcript":
        return render_transcript(messages)
    if template is None:
        raise ValueError(
            "chat_format 'template' needs a chat template in the GGUF file, and this model has none; "
            "use chat_format 'transcript' (base models) or a GGUF that ships tokenizer.chat_template"
        )
    return render_template(messages, template)


def render_raw(messages: Sequence[Message]) -> RenderedPrompt:
    """Every message's text, concatenated: the conversation is one completion prompt."""
    return RenderedPrompt(text="".join(m.text for m in messages), format="raw")


def render_transcript(messages: Sequence[Message]) -> RenderedPrompt:
    """A ``User:`` / ``Assistant:`` dialogue under the system text (see the module docstring).

    System messages become the header (joined by blank lines); without one, a one-line preamble is
    used. If the last message is the assistant's, its text is left open for the model to continue
    (a prefill); otherwise the prompt ends with ``Assistant:``.
    """
    system = "\n\n".join(m.text for m in messages if m.role == "system") or TRANSCRIPT_PREAMBLE
    turns = [m for m in messages if m.role != "system"]
    lines = [_turn(m) for m in (*TRANSCRIPT_DEMO, *turns)]
    if turns and turns[-1].role == "assistant":
        body = "\n".join(lines)
        strip = False
    else:
        body = "\n".join([*lines, "Assistant:"])
        strip = True
    return RenderedPrompt(
        text=f"{system}\n\n{body}",
        stop=TRANSCRIPT_STOPS,
        format="transcript",
        strip_leading_space=strip,
    )


def _turn(message: Message) -> str:
    speaker = _SPEAKERS.get(message.role, message.role.capitalize())
    return f"{speaker}: {message.text}"


def render_template(messages: Sequence[Message], template: ChatTemplate) -> RenderedPrompt:
    """Render with the GGUF's Jinja2 chat template, through llama-cpp-python's own formatter.

    The formatter is imported here, not at module level, so the other formats work (and are tested)
    without llama-cpp-python installed.
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=template.source,
        eos_token=template.eos_token,
        bos_token=template.bos_token,
        add_generation_prompt=True,
    )
    dicts: list[Any] = [{"role": m.role, "content": m.text} for m in messages]  # llama_cpp's TypedDicts
    result = formatter(messages=dicts)
    stop = result.stop
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    # A template that writes the BOS token itself must not get a second one from the tokenizer
    # (a doubled BOS degrades answers); one that does not still needs it.
    writes_bos = bool(template.bos_token) and result.prompt.startswith(template.bos_token)
    return RenderedPrompt(
        text=result.prompt, stop=stops, format="template", special=True, add_bos=not writes_bos
    )


class StopScanner:
    """Finds the first stop sequence in streamed text, holding back only what might begin one.

    ``feed`` returns the text that is safe to emit now and whether a stop sequence was found (the
    stop sequence and anything after it are never emitted). Text that could be the start of a stop
    sequence is held until the next piece decides it; ``flush`` returns it when generation ends.
    """

    __slots__ = ("_held", "_longest", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in dict.fromkeys(stops) if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return buf[:cut], True
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of some stop sequence."""
        for n in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self._stops):
                return n
        return 0
