"""tap/collect: the final completion is seen once, however the stream ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aiestack.errors import ProviderUnavailable, StreamBroken
from aiestack.streams import collect, single, tap
from aiestack.types import Completion, Delta, Message, ToolCallDelta, Usage

pytestmark = pytest.mark.unit


def _completion(deltas: list[Delta], *, fail: Exception | None = None) -> Completion:
    async def gen() -> AsyncIterator[Delta]:
        for d in deltas:
            yield d
        if fail is not None:
            raise fail

    return Completion(message=Message("assistant"), model="m", provider="p", stream=gen())


async def test_collect_joins_text_tool_calls_and_takes_final_usage() -> None:
    c = _completion(
        [
            Delta(text="Hel"),
            Delta(text="lo", tool_calls=(ToolCallDelta(0, id="c1", name="f", arguments='{"a":'),)),
            Delta(tool_calls=(ToolCallDelta(0, arguments="1}"),)),
            Delta(finish_reason="tool_calls", usage=Usage(3, 2), cost_usd=0.5),
        ]
    )
    final = await collect(c)
    assert final.text == "Hello"
    assert final.message.tool_calls[0].name == "f" and final.message.tool_calls[0].arguments == '{"a":1}'
    assert final.usage == Usage(3, 2) and final.cost_usd == 0.5 and final.stream is None


async def test_tap_reports_clean_end_once() -> None:
    seen: list[tuple[Completion | None, BaseException | None]] = []

    async def on_done(c: Completion | None, e: BaseException | None) -> None:
        seen.append((c, e))

    c = tap(_completion([Delta(text="a"), Delta(text="b", finish_reason="stop")]), on_done)
    assert c.stream is not None
    assert [d.text async for d in c.stream] == ["a", "b"]
    assert len(seen) == 1 and seen[0][1] is None and seen[0][0] is not None and seen[0][0].text == "ab"


async def test_tap_reports_error_and_reraises() -> None:
    seen: list[BaseException | None] = []

    async def on_done(c: Completion | None, e: BaseException | None) -> None:
        seen.append(e)

    c = tap(_completion([Delta(text="a")], fail=ProviderUnavailable("boom", provider="p")), on_done)
    assert c.stream is not None
    with pytest.raises(ProviderUnavailable):
        async for _ in c.stream:
            pass
    assert len(seen) == 1 and isinstance(seen[0], ProviderUnavailable)


async def test_tap_reports_a_stream_without_finish_as_broken() -> None:
    seen: list[BaseException | None] = []

    async def on_done(c: Completion | None, e: BaseException | None) -> None:
        seen.append(e)

    c = tap(_completion([Delta(text="a")]), on_done)
    assert c.stream is not None
    with pytest.raises(StreamBroken):
        async for _ in c.stream:
            pass
    assert isinstance(seen[0], StreamBroken)


async def test_tap_reports_client_stopping_early() -> None:
    seen: list[tuple[str, BaseException | None]] = []

    async def on_done(c: Completion | None, e: BaseException | None) -> None:
        seen.append((c.text if c else "", e))

    c = tap(_completion([Delta(text="a"), Delta(text="b"), Delta(finish_reason="stop")]), on_done)
    stream = c.stream
    assert stream is not None
    first = await anext(stream)
    assert first.text == "a"
    await stream.aclose()  # type: ignore[attr-defined]
    assert len(seen) == 1 and seen[0][0] == "a" and isinstance(seen[0][1], StreamBroken)


async def test_single_turns_a_completion_into_a_one_delta_stream() -> None:
    done = Completion(message=Message("assistant", "hi"), model="m", provider="p", finish_reason="stop", usage=Usage(1, 1))
    again = await collect(single(done))
    assert again.text == "hi" and again.usage == Usage(1, 1) and again.finish_reason == "stop"
