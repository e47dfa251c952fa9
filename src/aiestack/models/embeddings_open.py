"""One embedding model from its ``[embeddings]`` fields: the constructor that a stack and a batch worker share."""

from __future__ import annotations

import os

from aiestack.errors import ConfigError
from aiestack.models.base import EmbeddingModel


def open_embedding_model(
    *,
    provider: str,
    model: str,
    base_url: str = "",
    api_key_env: str = "",
    batch_size: int = 64,
    threads: int = 0,
    **_: object,
) -> EmbeddingModel:
    """The embedding model for ``provider`` (``sentence_transformers`` or ``openai``), not cached.

    Extra keyword arguments (the rest of an ``[embeddings]`` table, e.g. ``cache``) are ignored, so
    ``open_embedding_model(**settings.embeddings.model_dump())`` works.
    """
    if provider == "openai":
        from aiestack.models.openai_embeddings import OpenAIEmbeddingModel

        if not base_url:
            raise ConfigError(
                "embeddings.base_url", "provider 'openai' needs a base URL", "set embeddings.base_url, e.g. https://api.openai.com/v1"
            )
        return OpenAIEmbeddingModel(
            model,
            base_url=base_url,
            api_key=os.environ.get(api_key_env) if api_key_env else None,
            api_key_env=api_key_env or None,
            batch_size=batch_size,
        )
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    return SentenceTransformerEmbeddings(model, batch_size=batch_size, threads=threads)
