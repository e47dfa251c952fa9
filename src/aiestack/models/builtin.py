"""The built-in model providers, registered through the same hook as any plugin."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aiestack.hookspecs import ProviderSpec, hookimpl
from aiestack.models.base import ChatModel
from aiestack.models.fake import FakeModel


class FakeModelConfig(BaseModel):
    """``provider = "fake"``: echoes the last user message (for trying configuration, and tests)."""

    model_config = ConfigDict(extra="forbid")
    provider: Literal["fake"]
    model: str | None = None
    delay_s: float = Field(default=0.0, ge=0, description="Pause before each streamed word.")

    def upstream(self, name: str) -> str:
        return self.model or name

    def create(self, environ: Mapping[str, str] | None = None) -> FakeModel:
        return FakeModel(default_delay_s=self.delay_s)


def _create(name: str, cfg: Any, env: Mapping[str, str]) -> ChatModel:
    provider: ChatModel = cfg.create(env)
    return provider


def _llama_cpp(name: str, cfg: Any, env: Mapping[str, str]) -> ChatModel:
    from aiestack.models.llama_cpp import LlamaCppModel

    return LlamaCppModel(cfg)


def _upstream(name: str, cfg: Any) -> str:
    upstream: str = cfg.upstream(name)
    return upstream


@hookimpl
def register_models(register: Callable[[ProviderSpec], None]) -> None:
    from aiestack.models.anthropic import AnthropicModelConfig
    from aiestack.models.llama_cpp import LlamaCppModelConfig
    from aiestack.models.openai import OpenAIModelConfig

    register(ProviderSpec("openai", OpenAIModelConfig, _create, upstream=_upstream))
    register(ProviderSpec("anthropic", AnthropicModelConfig, _create, upstream=_upstream))
    register(ProviderSpec("llama_cpp", LlamaCppModelConfig, _llama_cpp, local=True))
    register(ProviderSpec("fake", FakeModelConfig, _create, local=True, upstream=_upstream))
