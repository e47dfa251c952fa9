"""Settings: one ``aiestack.toml`` plus ``AIESTACK_*`` environment variables.

Precedence, highest first: arguments given in code, environment variables
(``AIESTACK_TRACING__CONTENT=true``: nested keys joined by ``__``), the TOML file
(``$AIESTACK_CONFIG``, else ``./aiestack.toml``), the defaults below. Secrets never live in the
file: a model names the environment variable that holds its key (``api_key_env``).

An invalid configuration fails at start with a :class:`ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from aiestack.errors import ConfigError

EMBEDDED_MODEL = "gemma-3-270m"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreSettings(_Section):
    url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite in the data directory.")
    batch_size: int = Field(default=256, ge=1, description="Exchanges/spans written per batch by the background writer.")
    flush_interval_s: float = Field(default=0.5, gt=0, description="How often the background writer flushes.")
    postings_cache_mb: int = Field(
        default=256,
        ge=0,
        description="PostgreSQL document store: MiB of BM25 posting lists each process keeps between searches "
        "(16 bytes a posting; 0 reads them every search). Other stores ignore it.",
    )
    hnsw_build_memory_mb: int = Field(
        default=4096,
        ge=1,
        description="PostgreSQL document store: the most MiB of maintenance_work_mem an HNSW index build "
        "takes (sized to the collection below it: ~2.9 KB a 384-d chunk; a graph that does not fit is "
        "built on disk, far more slowly). Other stores ignore it.",
    )


class TracingSettings(_Section):
    enabled: bool = Field(default=True, description="Record spans (exchanges are logged either way).")
    content: bool = Field(default=False, description="Record message content in spans and exchanges.")
    otlp_endpoint: str = Field(default="", description="OTLP/HTTP traces endpoint, e.g. http://localhost:4318/v1/traces.")
    service_name: str = Field(default="aiestack", description="OpenTelemetry service.name of exported spans.")


class EmbeddingSettings(_Section):
    provider: Literal["sentence_transformers", "openai"] = Field(
        default="sentence_transformers", description="Local sentence-transformers, or an OpenAI-compatible API."
    )
    model: str = Field(default="all-MiniLM-L6-v2", description="Model name (a path also works for sentence_transformers).")
    base_url: str = Field(default="", description="For provider=openai: the /v1 base URL.")
    api_key_env: str = Field(default="", description="For provider=openai: the environment variable holding the key.")
    batch_size: int = Field(default=64, ge=1, description="Texts embedded per call.")
    threads: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="For sentence_transformers: torch CPU threads per embedding call (process-wide); 0: torch's default "
        "(every core). 1 keeps a busy server's calls from stalling each other; raise it for bulk ingestion on idle cores.",
    )
    cache: bool = Field(default=True, description="Cache vectors by (model, text hash) in the store.")


class GatewaySettings(_Section):
    auth: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="auto: keys are required once one exists; required: always; off: never (admin key still works).",
    )
    admin_key_env: str = Field(
        default="AIESTACK_ADMIN_KEY", description="Environment variable holding the admin key (admin endpoints)."
    )
    redis_url: str = Field(
        default="", description="Redis for limits exact across processes (e.g. redis://localhost:6379/0); empty: in-process."
    )
    redis_prefix: str = Field(default="aiestack:", description="Prefix of every Redis key aiestack writes.")
    limits_fail_open: bool = Field(
        default=False,
        description="When Redis is unreachable: false answers 503 (limits fail closed); true lets requests through unmetered, with a logged warning.",
    )
    key_cache_ttl_s: float = Field(
        default=5.0, ge=0, description="How long a key lookup is cached; a revoke takes effect within this time."
    )
    default_output_tokens: int = Field(
        default=512, ge=1, description="Output tokens assumed by the TPM check for requests without max_tokens."
    )
    max_text_chars: int = Field(
        default=1_000_000,
        ge=1,
        description="Longest string accepted in any field of a request body (message text, tool arguments, ...).",
    )
    max_embedding_inputs: int = Field(default=2048, ge=1, description="Most inputs in one /v1/embeddings request.")
    max_embedding_chars: int = Field(
        default=1_200_000, ge=1, description="Most characters of input, all inputs together, in one /v1/embeddings request."
    )
    auth_failure_limit: int = Field(
        default=10, ge=1, description="Failed authentications (API keys, admin key, console login) an address may make per window."
    )
    auth_failure_window_s: float = Field(default=300.0, gt=0, description="The window of auth_failure_limit, in seconds.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses (or CIDR ranges) of reverse proxies whose X-Forwarded-For is believed; empty: none.",
    )
    keep_alive_s: int = Field(
        default=75,
        ge=1,
        le=3600,
        description="How long an idle client connection is kept open. Longer than clients keep idle connections "
        "(httpx and the OpenAI SDK: 5 s), so a client never reuses one the server is closing.",
    )


class CacheSettings(_Section):
    """``[cache]``: the exact and semantic answer caches (defaults for every route; see docs/caching.md)."""

    enabled: bool = Field(default=True, description="Serve repeated requests from the cache (deterministic ones by default).")
    exact: bool = Field(default=True, description="The exact cache: same route, tenant, messages and parameters.")
    semantic: bool = Field(default=True, description="The semantic cache: the same last question in other words.")
    backend: Literal["auto", "memory", "sql", "redis"] = Field(
        default="auto", description="auto: Redis if redis_url (or gateway.redis_url) is set, else the SQL store, else memory."
    )
    redis_url: str = Field(default="", description="Redis for cache entries; empty: gateway.redis_url.")
    ttl_s: float = Field(default=86400.0, gt=0, description="How long an answer stays in the cache.")
    embedder: Literal["static", "embeddings"] = Field(
        default="static",
        description="What embeds questions for the semantic cache: static (the packaged static MiniLM, ~0.1 ms) "
        "or embeddings (the [embeddings] model, e.g. MiniLM: better recall, milliseconds per request).",
    )
    threshold: float = Field(default=0.80, ge=-1, le=1, description="Least cosine similarity for a semantic hit.")
    verify: bool = Field(default=True, description="Check semantic candidates for negations, numbers, entities, antonyms.")
    substitution_margin: float = Field(
        default=0.06, ge=0, le=1, description="Extra similarity a candidate needs when a content word was swapped."
    )
    confirm_swaps: bool = Field(
        default=True,
        description="With embedder = static: a candidate that swaps a content word is served only if the "
        "[embeddings] model also scores it at threshold + substitution_margin (loaded on first need).",
    )
    deterministic_only: bool = Field(
        default=True, description="Cache only temperature-0 requests (a route or request may opt in otherwise)."
    )
    store_flagged: bool = Field(default=False, description="Also cache answers an output guard flagged.")
    semantic_max_chars: int = Field(
        default=400, ge=1, description="Longer last user turns (documents, templated prompts) are cached exactly only."
    )
    max_entries: int = Field(default=100_000, ge=1, description="Entries the memory backend keeps (oldest dropped first).")
    sync_interval_s: float = Field(
        default=1.0, gt=0, description="How often the semantic index reads entries other processes added (SQL, Redis)."
    )


class RouterSettings(_Section):
    """``[router]``: the semantic router, picking a route by the meaning of the request."""

    model: str = Field(default="auto", description="The model name that asks for semantic routing.")
    default_route: str = Field(default="", description="The route (or model) when none matches; empty: default_model.")
    method: Literal["max", "centroid"] = Field(
        default="centroid", description="Score a route by its most similar example, or by the centroid of its examples."
    )
    threshold: float = Field(default=0.5, ge=-1, le=1, description="Threshold of routes that set none.")
    embedder: Literal["static", "embeddings"] = Field(
        default="embeddings",
        description="What embeds requests and examples: embeddings (the [embeddings] model, e.g. MiniLM: "
        "the better router on bench/routing.py once thresholds are fitted) or static (the packaged static "
        "MiniLM, ~0.25 ms a request; fit its thresholds again, its similarities run higher).",
    )


class FeedbackSettings(_Section):
    """``[feedback]``: implicit feedback from conversations (see docs/feedback.md)."""

    implicit: bool = Field(
        default=True, description="Record regenerations, edited resends, early stops and complaints as implicit feedback."
    )
    window_s: float = Field(default=3600.0, gt=0, description="How far back a regeneration or edit is matched to its answer.")


class PromptSettings(_Section):
    """``[prompts]``: the prompt registry (see docs/prompts.md)."""

    label_cache_s: float = Field(
        default=1.0, ge=0, le=60, description="How long a label lookup is cached: a moved label applies within this time."
    )


_GuardEntry = str | dict[str, Any]


class GuardSettings(_Section):
    """``[guards]``: the default guardrail policy (a route may override it; see docs/guardrails.md).

    Each guard is an action (block | redact | flag | retry | off) or a table with ``action`` and options,
    e.g. ``injection = { action = "block", threshold = 0.7 }``.
    """

    enabled: bool = Field(default=True, description="Run the guardrails at all.")
    pii: _GuardEntry = Field(default="redact", description="PII in the request: redacted to placeholders, restored in the answer.")
    secrets: _GuardEntry = Field(default="redact", description="API keys, tokens and private keys in the request.")
    injection: _GuardEntry = Field(default="block", description="Prompt injection / jailbreak in the last user turn (threshold 0.5).")
    context_injection: _GuardEntry = Field(default="block", description="Indirect injection in retrieved chunks: block drops the chunk.")
    topics: _GuardEntry = Field(default="off", description="Banned terms and topics (give terms = [...] or topics = {...}).")
    toxicity: _GuardEntry = Field(
        default="off", description="Hate speech and offensive language, judged per sentence in requests and answers (opt-in)."
    )
    pii_leak: _GuardEntry = Field(default="redact", description="PII in the answer.")
    canary: _GuardEntry = Field(default="block", description="System-prompt leak, detected with a canary token.")
    json_schema: _GuardEntry = Field(default="retry", description="Answers to JSON requests must parse and validate; retry re-asks.")
    grounding: _GuardEntry = Field(default="flag", description="Answers with retrieved context: share supported by it (threshold 0.5).")


class PriceSettings(_Section):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)


class ComputeSettings(_Section):
    """``[compute]``: where batch work (ingest embedding, eval scoring) runs: in-process, or on Ray."""

    ray_address: str = Field(
        default="",
        description="Empty: in-process. 'local': start a Ray instance here; 'auto' or 'ray://head:10001': a running cluster.",
    )
    ray_workers: int = Field(default=2, ge=1, le=1024, description="Ray actors a batch step spreads its items over.")
    workers: int = Field(default=1, ge=1, le=256, description="Threads an in-process batch step uses.")


class Settings(BaseSettings):
    """Everything aiestack reads at start. See ``aiestack init`` for a commented example."""

    model_config = SettingsConfigDict(
        env_prefix="AIESTACK_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(default=Path("~/.aiestack"), description="Where the SQLite store and caches live.")
    default_model: str = Field(default=EMBEDDED_MODEL, description="The model used when none is named.")
    embedded_model: bool = Field(default=True, description=f"Offer the packaged {EMBEDDED_MODEL} as '{EMBEDDED_MODEL}'.")
    store: StoreSettings = Field(default_factory=StoreSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    guards: GuardSettings = Field(default_factory=GuardSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    prompts: PromptSettings = Field(default_factory=PromptSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Named models: [models.NAME] with provider = llama_cpp|openai|anthropic|fake."
    )
    pricing: dict[str, PriceSettings] = Field(default_factory=dict, description="Per-model price overrides (USD per 1M tokens).")
    routes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named routes: [routes.NAME] with deployments, fallbacks, timeout_s, retries, backoff, breaker.",
    )
    agents: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named agents: [agents.NAME] with model, instructions, tools, collection, approval and limits.",
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(os.path.expandvars(str(v))).expanduser()

    @field_validator("models")
    @classmethod
    def _models_have_provider(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, cfg in v.items():
            if not isinstance(cfg, dict) or "provider" not in cfg:
                raise ValueError(f"model '{name}' needs a provider (llama_cpp, openai, anthropic or fake)")
        return v

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_dir / 'aiestack.db'}"

    @property
    def store_fingerprint(self) -> str:
        """A short one-way fingerprint of :attr:`store_url` (which may hold a password): a server sends it
        so a CLI can tell whether the server reads the same store as its own configuration."""
        import hashlib

        return hashlib.sha256(self.store_url.encode()).hexdigest()[:16]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def config_path() -> Path | None:
    """The config file in use: ``$AIESTACK_CONFIG``, else ``./aiestack.toml`` if it exists."""
    explicit = os.environ.get("AIESTACK_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    local = Path("aiestack.toml")
    return local if local.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming the bad key and its fix."""
    path = config_path()
    if path is not None and not path.is_file():
        raise ConfigError("AIESTACK_CONFIG", f"the file {path} does not exist", "point AIESTACK_CONFIG at an existing file, or run `aiestack init`")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise config_error(exc, Settings, source=str(path) if path else "the environment") from None
    except ValueError as exc:  # e.g. a TOML syntax error
        raise ConfigError(str(path or "config"), str(exc), "fix the TOML syntax (see `aiestack init` for an example)") from None


def config_error(exc: ValidationError, model: type[BaseModel], *, source: str, prefix: str = "") -> ConfigError:
    """Turn the first pydantic error into a ConfigError with a concrete fix."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join([prefix, *loc] if prefix else loc) or "(root)"
    env = "AIESTACK_" + "__".join(loc).upper()
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        did = f"did you mean '{close[0]}'? " if close else ""
        fix = f"{did}remove '{loc[-1]}' from {source}; known keys here: {', '.join(known)}"
        return ConfigError(key, "unknown key", fix)
    if kind == "missing":
        return ConfigError(key, "this key is required", f"set '{key}' in {source}")
    problem = err["msg"][0].lower() + err["msg"][1:]
    given = err.get("input")
    if given is not None and not isinstance(given, dict):
        problem += f" (got {given!r})"
    where = f"the environment variable {env}" if source == "the environment" else f"{source} (or {env})"
    return ConfigError(key, problem, f"set '{key}' to a valid value in {where}")


def _known_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return sorted(getattr(current, "model_fields", {}))
