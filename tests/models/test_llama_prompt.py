"""Prompt rendering for the embedded model and stop-sequence scanning of its output."""

from __future__ import annotations

import pytest

from aiestack.models.llama_prompt import (
    TRANSCRIPT_PREAMBLE,
    TRANSCRIPT_STOPS,
    ChatTemplate,
    StopScanner,
    render_prompt,
    resolve_format,
)
from aiestack.types import ContentPart, Message

pytestmark = pytest.mark.unit

USER = Message(role="user", content="The capital of France is")

# A cut-down Gemma 3 instruct template: BOS, turns with markers, and the generation prompt.
GEMMA_LIKE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{{ m.content }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.mark.parametrize(
    ("messages", "instruct", "has_template", "expected"),
    [
        ((USER,), False, False, "raw"),
        ((USER,), False, True, "raw"),  # a base model with a template still continues text
        ((Message(role="system", content="Be brief."), USER), False, False, "transcript"),
        ((USER, Message(role="assistant", content="Paris."), USER), False, False, "transcript"),
        ((USER,), True, True, "template"),
        ((USER,), True, False, "raw"),  # instruct, but the GGUF has no template to use
        ((Message(role="system", content="x"), USER), True, False, "transcript"),
    ],
)
def test_auto_picks_a_format_from_the_conversation_and_model(messages, instruct, has_template, expected):
    assert resolve_format(messages, "auto", instruct=instruct, has_template=has_template) == expected


def test_an_explicit_format_is_kept():
    assert resolve_format((USER,), "transcript", instruct=False, has_template=False) == "transcript"


def test_raw_concatenates_message_texts_without_stops():
    parts = (ContentPart(type="text", text="Once upon"), ContentPart(type="text", text=" a time"))
    prompt = render_prompt((Message(role="user", content=parts),), "raw")
    assert prompt.text == "Once upon a time"
    assert prompt.stop == ()
    assert prompt.add_bos and not prompt.special and not prompt.strip_leading_space


def test_a_single_user_message_becomes_a_completion_prompt_in_auto_mode():
    prompt = render_prompt((USER,))
    assert prompt.format == "raw"
    assert prompt.text == "The capital of France is"


def test_transcript_has_preamble_demo_turns_and_an_open_assistant_turn():
    messages = (
        Message(role="user", content="Name a fruit."),
        Message(role="assistant", content="An apple."),
        Message(role="user", content="Name a vegetable."),
    )
    prompt = render_prompt(messages, "transcript")
    assert prompt.text.startswith(TRANSCRIPT_PREAMBLE + "\n\n")
    assert prompt.text.endswith(
        "User: Name a fruit.\nAssistant: An apple.\nUser: Name a vegetable.\nAssistant:"
    )
    assert "User: What is the capital of Italy?\nAssistant: The capital of Italy is Rome.\n" in prompt.text
    assert prompt.stop == TRANSCRIPT_STOPS
    assert prompt.strip_leading_space
    assert not prompt.special  # user text must not be able to forge special tokens


def test_transcript_uses_system_messages_as_the_header():
    messages = (
        Message(role="system", content="You are terse."),
        Message(role="system", content="Answer in English."),
        Message(role="user", content="Hi"),
    )
    prompt = render_prompt(messages)
    assert prompt.format == "transcript"
    assert prompt.text.startswith("You are terse.\n\nAnswer in English.\n\nUser: ")
    assert TRANSCRIPT_PREAMBLE not in prompt.text


def test_transcript_continues_a_trailing_assistant_message():
    messages = (
        Message(role="user", content="Count to three."),
        Message(role="assistant", content="One, two,"),
    )
    prompt = render_prompt(messages, "transcript")
    assert prompt.text.endswith("User: Count to three.\nAssistant: One, two,")
    assert not prompt.strip_leading_space


def test_template_format_without_a_template_is_an_error():
    with pytest.raises(ValueError, match="transcript"):
        render_prompt((USER,), "template")


def test_no_messages_is_an_error():
    with pytest.raises(ValueError, match="at least one message"):
        render_prompt(())


def test_template_renders_turn_markers_and_does_not_double_the_bos_token():
    pytest.importorskip("llama_cpp")
    template = ChatTemplate(source=GEMMA_LIKE, bos_token="<bos>", eos_token="<eos>")
    messages = (Message(role="user", content="Hi"), Message(role="assistant", content="Hello!"), USER)
    prompt = render_prompt(messages, "auto", instruct=True, template=template)
    assert prompt.format == "template"
    assert prompt.text == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nThe capital of France is<end_of_turn>\n<start_of_turn>model\n"
    )
    assert prompt.special
    assert not prompt.add_bos
    assert prompt.stop == ("<eos>",)


def test_a_template_that_writes_no_bos_gets_it_from_the_tokenizer():
    pytest.importorskip("llama_cpp")
    template = ChatTemplate(source="{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}")
    prompt = render_prompt((USER,), "template", template=template)
    assert prompt.text == "[user] The capital of France is\n"
    assert prompt.add_bos


# --------------------------------------------------------------------------- StopScanner


def _scan(stops, pieces):
    scanner = StopScanner(stops)
    out, stopped = [], False
    for piece in pieces:
        text, stopped = scanner.feed(piece)
        out.append(text)
        if stopped:
            break
    if not stopped:
        out.append(scanner.flush())
    return out, stopped


def test_without_stops_text_passes_straight_through():
    assert _scan((), ["a", "\nUser:", "b"]) == (["a", "\nUser:", "b", ""], False)


def test_a_stop_inside_one_piece_cuts_it():
    assert _scan(("\nUser:",), ["Paris.\nUser: more"]) == (["Paris."], True)


def test_a_stop_split_over_pieces_is_held_back_then_cut():
    out, stopped = _scan(("\nUser:",), ["Paris", ".\n", "Us", "er:", " next"])
    assert stopped
    assert "".join(out) == "Paris."
    assert out[1] == "."  # "\n" held back: it may start the stop sequence


def test_held_text_that_turns_out_not_to_be_a_stop_is_released_in_order():
    out, stopped = _scan(("\nUser:",), ["a\n", "Us", "ually"])
    assert not stopped
    assert out == ["a", "", "\nUsually", ""]


def test_held_text_is_flushed_at_the_end():
    out, stopped = _scan(("\nUser:",), ["a", "\nUs"])
    assert not stopped
    assert "".join(out) == "a\nUs"
    assert out[-1] == "\nUs"


def test_the_earliest_of_several_stops_wins():
    assert _scan(("END", "\n\n"), ["one\n\ntwo END"]) == (["one"], True)


def test_a_stop_at_the_very_start_emits_nothing():
    assert _scan(("###",), ["###", "x"]) == ([""], True)
