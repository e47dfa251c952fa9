"""Typed errors. Each says what happened and what to do, and knows its HTTP / OpenAI error shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from aiestack.types import Usage


class AiestackError(Exception):
    """Base of every error aiestack raises on purpose.

    ``message`` says what happened; ``hint`` says what to do about it. ``http_status``,
    ``error_type`` and ``code`` give the OpenAI-compatible error shape used by the server.
    """

    http_status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message

    def to_openai(self) -> dict[str, Any]:
        """The body of an OpenAI-style error response."""
        return {"error": {"message": str(self), "type": self.error_type, "param": None, "code": self.code}}


class ConfigError(AiestackError):
    """The configuration is invalid. Names the key and the fix."""

    error_type = "configuration_error"
    code = "invalid_config"

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        super().__init__(f"Invalid configuration at '{key}': {problem}.", hint=f"Fix: {fix}")


class InvalidRequest(AiestackError):
    http_status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class NotFound(InvalidRequest):
    """The thing the request names does not exist."""

    http_status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PermissionDenied(AiestackError):
    """The caller is known but may not do this."""

    http_status = 403
    error_type = "permission_error"
    code = "permission_denied"


class StoreError(AiestackError):
    error_type = "storage_error"
    code = "store_unavailable"
    http_status = 503
    retryable = True


class ProviderError(AiestackError):
    """An upstream model provider failed."""

    http_status = 502
    error_type = "api_error"
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"[{provider}] {message}", hint=hint)


class ProviderUnavailable(ProviderError):
    """5xx from the upstream, or the model cannot be loaded/reached."""

    code = "provider_unavailable"
    retryable = True


class ProviderConnectionError(ProviderUnavailable):
    code = "provider_connection_error"


class ProviderTimeout(ProviderError):
    http_status = 504
    code = "provider_timeout"
    retryable = True


class ProviderRateLimited(ProviderError):
    http_status = 429
    error_type = "rate_limit_error"
    code = "provider_rate_limited"
    retryable = True


class ProviderAuthError(ProviderError):
    http_status = 502
    error_type = "authentication_error"
    code = "provider_auth_failed"


class ProviderBadRequest(ProviderError):
    """The upstream rejected the request as invalid (a 400 that retrying will not fix)."""

    http_status = 400
    error_type = "invalid_request_error"
    code = "provider_bad_request"


class ContextLengthExceeded(ProviderBadRequest):
    code = "context_length_exceeded"


class StreamBroken(ProviderError):
    """A stream ended in the middle of an answer. Never treated as a clean finish."""

    code = "stream_broken"
    retryable = True


class RateLimited(AiestackError):
    """A key's own limit (RPM, TPM) was reached."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, hint=hint)


class BudgetExceeded(AiestackError):
    http_status = 429
    error_type = "insufficient_quota"
    code = "budget_exceeded"


class AuthError(AiestackError):
    http_status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class GuardrailBlocked(AiestackError):
    http_status = 400
    error_type = "invalid_request_error"
    code = "guardrail_blocked"

    def __init__(self, guard: str, reason: str, *, usage: Usage | None = None, cost_usd: float | None = None) -> None:
        self.guard = guard
        #: What the answers the guard rejected used (an output guard blocks after the model ran):
        #: they are recorded, billed and counted like any answer's. None for an input block.
        self.usage = usage
        self.cost_usd = cost_usd
        super().__init__(f"Request blocked by guardrail '{guard}': {reason}.")


def spent(completion: Any, error: BaseException | None) -> tuple[Usage | None, float | None]:
    """What a call used: for an answer an output guard blocked, what the rejected answers used (a
    blocked stream's partial completion holds none of it); else its completion's usage and cost;
    ``(None, None)`` when nothing is known."""
    if isinstance(error, GuardrailBlocked) and error.usage is not None:
        return error.usage, error.cost_usd
    if completion is not None:
        return completion.usage, completion.cost_usd
    return None, None
