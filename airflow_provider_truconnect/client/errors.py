"""The one exception tree of the provider.

Every error raised by the client core, the hook, operators, sensors and triggers is a :class:`TruConnectError`.
Messages never contain credentials, tokens or whole response bodies: only the HTTP status, the API's error type and
messages (bounded), and the ``X-Correlation-ID`` of the request so that 1GLOBAL support can trace it.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Longest excerpt of a non-JSON error body kept on an exception.
MAX_BODY_EXCERPT = 200
#: Longest single API error message kept on an exception, and how many of them are kept.
MAX_MESSAGE_CHARS = 300
MAX_MESSAGES = 10


class TruConnectError(Exception):
    """Base class of every error raised by ``airflow-provider-truconnect``.

    :param message: human-readable summary; must not contain secrets.
    :param status_code: HTTP status of the response, when there was one.
    :param error_type: the API's error type (``type`` of the classic model, ``title`` of RFC 7807, or the OAuth
        ``error`` code).
    :param messages: the API's error messages.
    :param correlation_id: the ``X-Correlation-ID`` sent with the request.
    :param retryable: whether repeating the same request may succeed.
    :param sent: ``False`` when the failed request provably never reached the API (connection refused, DNS failure, a
        certificate refused during the TLS handshake, or no token could be obtained for it), so that even a
        non-idempotent request may be repeated.
    :param definite_rejection: the API answered with a readable refusal (a 4xx other than 429 whose body is a JSON
        error), so the request was not acted upon even though it was sent.
    :param retry_after: the server's ``Retry-After`` hint in seconds, when it sent one.
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        messages: Sequence[str] = (),
        correlation_id: str | None = None,
        retryable: bool | None = None,
        sent: bool = True,
        definite_rejection: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.sent = sent
        self.definite_rejection = definite_rejection
        self.retry_after = retry_after
        self.status_code = status_code
        self.error_type = error_type
        self.messages = tuple(messages)
        self.correlation_id = correlation_id
        self.retryable = self.default_retryable if retryable is None else retryable
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}")
        if self.error_type:
            parts.append(f"type {self.error_type}")
        if self.messages:
            parts.append("messages: " + "; ".join(self.messages))
        if self.correlation_id:
            parts.append(f"correlation id {self.correlation_id}")
        return " | ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps the exception picklable (Airflow may ship it between processes) with its keyword arguments.
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[TruConnectError], message: str, state: dict[str, object]) -> TruConnectError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    err.args = (err._render(),)
    return err


class TruConnectConfigError(TruConnectError, ValueError):
    """The connection or an argument is invalid; raised before the request leaves (``sent=False``), never retried.

    :param field: the name of the offending field, e.g. ``login`` or ``extra.timeout``.
    :param problem: what is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"Invalid {field}: {problem}", sent=False)


class TruConnectAuthError(TruConnectError):
    """Authentication or authorisation failed: the token endpoint refused, or the API answered 401/403."""

    def __init__(
        self,
        message: str,
        *,
        oauth_error: str | None = None,
        oauth_error_description: str | None = None,
        **kwargs: object,
    ) -> None:
        self.oauth_error = oauth_error
        self.oauth_error_description = oauth_error_description
        if oauth_error:
            kwargs.setdefault("error_type", oauth_error)
            if oauth_error_description:
                kwargs.setdefault("messages", (oauth_error_description,))
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class TruConnectClientError(TruConnectError):
    """The API rejected the request (4xx); fix the request before trying again."""


class TruConnectNotFoundError(TruConnectClientError):
    """The resource does not exist (404)."""


class TruConnectRateLimitError(TruConnectClientError):
    """The per-minute rate limit was hit (429); ``retry_after`` holds the server's hint in seconds, if any."""

    default_retryable = True


class TruConnectServerError(TruConnectError):
    """The API failed (5xx), or gave an answer the client cannot use: a body that is not JSON, a redirect (never
    followed), or an informational (1xx) status as the final answer."""

    default_retryable = True


class TruConnectConnectionError(TruConnectError):
    """The request did not complete: connection refused or dropped, or a timeout (``sent=False``: refused)."""

    default_retryable = True


class TruConnectUncertainError(TruConnectError):
    """A request that is not safe to repeat was sent and may or may not have been acted upon; it is not repeated.

    Raised for every answer other than a readable success or a definite rejection: a redirect, a 1xx or 5xx status,
    a 429, an unreadable body, a dropped connection or a read timeout.
    """


class TruConnectOrderUncertainError(TruConnectUncertainError):
    """An order request (``POST /v2/orders``) may or may not have created the order; it is not repeated, to avoid
    buying twice."""


class TruConnectOrderFailedError(TruConnectError):
    """The order reached the ``FAILED`` status.

    :param order_id: the order's id.
    """

    def __init__(self, message: str, *, order_id: str, **kwargs: object) -> None:
        self.order_id = order_id
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class TruConnectTimeoutError(TruConnectError):
    """Waiting for a remote condition (an order, a sensor condition) ran past its deadline."""


class TruConnectPaginationError(TruConnectError):
    """The API's pagination links loop or cannot be followed."""


class TruConnectResponseCheckError(TruConnectError):
    """A ``response_check`` callable returned a false value."""


class TruConnectXComTooLargeError(TruConnectError):
    """The value an operator would return is too large to push to XCom."""
