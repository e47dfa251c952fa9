"""What a finetuning run trains on: stored versions and exported files, rendered as the model is served."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from aiestack.datasets import build_dataset, export_dataset, from_file
from aiestack.errors import ConfigError
from aiestack.finetune import load_training_data
from aiestack.finetune.data import Renderer, dpo_texts, sft_texts
from aiestack.models.llama_prompt import TRANSCRIPT_PREAMBLE
from aiestack.stores.exchanges_memory import MemoryExchangeStore

CHAT = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]}]
PAIRS = [{"prompt": "Capital of Italy?", "chosen": "Rome", "rejected": "Milan"}]


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_stored_version_and_its_export_are_the_same_data(tmp_path: Path) -> None:
    store = MemoryExchangeStore()
    version, _ = build_dataset(store, "facts", from_file(_jsonl(tmp_path / "chat.jsonl", CHAT)))
    stored = load_training_data("facts@1", store=store)
    assert stored.source["dataset"] == "facts@1" and stored.source["content_hash"] == version.content_hash
    for fmt in ("openai", "hf"):
        out = io.StringIO()
        export_dataset(store, version, out, fmt)  # type: ignore[arg-type]
        (tmp_path / f"{fmt}.jsonl").write_text(out.getvalue())
        exported = load_training_data(tmp_path / f"{fmt}.jsonl")
        assert exported.rows == stored.rows and exported.source["content_hash"] == version.content_hash


def test_openai_dpo_lines_read_back_as_preference_pairs(tmp_path: Path) -> None:
    store = MemoryExchangeStore()
    version, _ = build_dataset(store, "prefs", from_file(_jsonl(tmp_path / "p.jsonl", PAIRS)))
    out = io.StringIO()
    export_dataset(store, version, out, "openai")
    assert "preferred_output" in out.getvalue()
    (tmp_path / "openai.jsonl").write_text(out.getvalue())
    data = load_training_data(tmp_path / "openai.jsonl")
    assert data.kind == "preference" and data.source["content_hash"] == version.content_hash


def test_prompts_are_rendered_as_the_llama_cpp_provider_serves_them(tmp_path: Path) -> None:
    data = load_training_data(_jsonl(tmp_path / "chat.jsonl", CHAT))
    texts = sft_texts(data, Renderer(eos="<eos>"))
    # two turns (system + user): the transcript, ending with "Assistant:"; the answer follows after a space
    assert texts[0]["prompt"].startswith("Be brief.\n\n") and texts[0]["prompt"].endswith("User: 2+2?\nAssistant:")
    assert texts[0]["completion"] == " 4<eos>"
    # one user message: raw, the question itself is the prompt
    assert texts[1] == {"prompt": "Capital of France?", "completion": "Paris<eos>"}
    forced = sft_texts(data, Renderer(chat_format="transcript"))
    assert forced[1]["prompt"].startswith(TRANSCRIPT_PREAMBLE) and forced[1]["completion"] == " Paris"
    pairs = load_training_data(_jsonl(tmp_path / "p.jsonl", PAIRS))
    assert sft_texts(pairs, Renderer())[0] == {"prompt": "Capital of Italy?", "completion": "Rome"}  # SFT on the chosen answer
    assert dpo_texts(pairs, Renderer(eos="</s>"))[0] == {"prompt": "Capital of Italy?", "chosen": "Rome</s>", "rejected": "Milan</s>"}
    with pytest.raises(ConfigError, match="preference pairs"):
        dpo_texts(data, Renderer())
    with pytest.raises(ConfigError, match="no chat template"):
        sft_texts(data, Renderer(chat_format="template"))


def test_unknown_data_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a file nor a dataset"):
        load_training_data(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="datasets list"):
        load_training_data("nothing@3", store=MemoryExchangeStore())


def test_a_slow_gguf_tokenizer_conversion_is_cached(tiny_gemma3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gguf")
    from aiestack.finetune.base import _gguf_tokenizer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    converted = _gguf_tokenizer(tiny_gemma3, cache_after_s=0.0)
    cached = list((tmp_path / "aiestack" / "gguf-tokenizers").iterdir())
    assert len(cached) == 1 and (cached[0] / "tokenizer_config.json").is_file()
    again = _gguf_tokenizer(tiny_gemma3)  # read from the cache
    text = "Hello world,\nUser: 2+2?"
    assert again(text)["input_ids"] == converted(text)["input_ids"] and again.eos_token == "<eos>"


def test_an_instruct_models_chat_template_renders_the_prompt_without_a_second_bos(tmp_path: Path) -> None:
    from aiestack.finetune.data import chat_template

    class Tokenizer:
        bos_token, bos_token_id = "<bos>", 2

        def __call__(self, text: str) -> dict[str, list[int]]:
            return {"input_ids": [2, 99]}

        def apply_chat_template(self, messages: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool) -> str:
            turns = "".join(f"<start_of_turn>{m['role']}\n{m['content']}<end_of_turn>\n" for m in messages)
            return f"<bos>{turns}<start_of_turn>model\n" if add_generation_prompt else f"<bos>{turns}"

    data = load_training_data(_jsonl(tmp_path / "chat.jsonl", CHAT[1:]))
    texts = sft_texts(data, Renderer(chat_format="template", eos="<eos>", template=chat_template(Tokenizer())))
    assert texts == [{"prompt": "<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n", "completion": "Paris<eos>"}]
