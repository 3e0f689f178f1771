"""The one retry policy: which failures are retried, how long to wait, and when to give up.

Idempotent requests are retried on connection errors, timeouts, 429 and 500/502/503/504 with exponential backoff and
full jitter, honouring ``Retry-After`` (seconds or an HTTP date). A ``Retry-After`` longer than ``max_retry_after`` is
not waited for: the call fails at once, with the hint on the error's ``retry_after``, rather than coming back early
and hitting the limit again. A request that is not idempotent (``POST /v2/orders``) is retried only when it provably
never left: the connection was refused, the host name did not resolve, the connect timed out, or no token could be
obtained for it (see :mod:`airflow_provider_truconnect.client.core` for the whole rule). The policy drives tenacity for
sync code and its ``AsyncRetrying`` twin for async code; a retry loop started inside another (the token fetched for an
API call) makes one attempt only.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import tenacity

from airflow_provider_truconnect.client.errors import TruConnectError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Statuses worth repeating an idempotent request for.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Longest exponent of the backoff; larger attempt numbers would overflow a float long after ``backoff_max`` caps them.
_MAX_EXPONENT = 62
#: Set while a retry loop runs in this thread or task: a loop started inside it (the token fetched by an API call)
#: makes a single attempt and leaves the retrying to the outer loop, so that attempts and waiting stay within one budget
#: instead of multiplying (5 attempts x 5 token attempts).
_IN_RETRY_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar("truconnect_in_retry_loop", default=False)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delay-seconds or an HTTP date.

    :param value: the header value.
    :param now: the current epoch time (default: ``time.time()``), for HTTP dates.
    :return: seconds to wait (never negative), or ``None`` when absent or unparseable.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass
class RetryPolicy:
    """How requests are retried.

    :param max_retries: retries after the first attempt (5 attempts in all by default).
    :param backoff_base: first backoff in seconds; doubles on each retry.
    :param backoff_max: the largest single backoff.
    :param max_retry_after: the longest ``Retry-After`` waited for; a longer hint ends the retries at once.
    :param max_total_wait: total seconds of waiting across all retries of one request, after which it gives up.
    :param sleep: the sleep function (injectable for tests).
    :param asleep: the async sleep function (injectable for tests).
    :param rng: source of jitter.
    """

    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 20.0
    max_total_wait: float = 45.0
    sleep: Callable[[float], None] = time.sleep
    asleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def should_retry(self, exc: BaseException, *, idempotent: bool) -> bool:
        """Whether ``exc`` is worth another attempt of the same request.

        :param exc: the failure.
        :param idempotent: whether repeating the request is safe even if it was processed.
        """
        if not isinstance(exc, TruConnectError) or not exc.retryable:
            return False
        hint = self._hint(exc)
        if hint is not None and hint > self.max_retry_after:
            # The server asks for a longer pause than we are willing to hold a worker for; retrying sooner would only
            # hit the limit again.
            return False
        if idempotent:
            return True
        # Not idempotent: only failures that prove the request never left.
        return not exc.sent

    @staticmethod
    def _hint(exc: BaseException | None) -> float | None:
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, int | float) and not isinstance(hint, bool) and hint >= 0:
            return float(hint)
        return None

    def _ceiling(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))

    def backoff(self, attempt: int, exc: BaseException | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``.

        :param attempt: the number of the attempt that just failed (1-based).
        :param exc: its failure; a ``Retry-After`` hint on a 429 or 503 wins over the backoff.
        """
        hint = self._hint(exc)
        if hint is not None:
            return hint
        ceiling = self._ceiling(attempt)
        # Full jitter in the upper half: spreads the retries of many workers hit by the same outage.
        return self.rng.uniform(ceiling / 2, ceiling)

    def _tenacity_kwargs(self, idempotent: bool, describe: str) -> dict[str, object]:
        import tenacity

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            return self.backoff(state.attempt_number, exc)

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number > self.max_retries:
                return True
            exc = state.outcome.exception() if state.outcome is not None else None
            hint = self._hint(exc)
            spent = state.idle_for + (hint if hint is not None else self._ceiling(state.attempt_number))
            return spent > self.max_total_wait

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait_s = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.2f s",
                describe,
                state.attempt_number,
                self.max_retries + 1,
                exc,
                wait_s,
            )

        return {
            "retry": tenacity.retry_if_exception(lambda e: self.should_retry(e, idempotent=idempotent)),
            "stop": stop,
            "wait": wait,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def call(self, fn: Callable[[], T], *, idempotent: bool, describe: str) -> T:
        """Run ``fn`` under the policy.

        :param fn: one attempt.
        :param idempotent: whether the request may be repeated after it was processed.
        :param describe: what the attempt does, for the retry log line (never secrets).
        :return: ``fn``'s result.
        :raises TruConnectError: the last failure when retries are exhausted or the failure is not retryable.
        """
        if _IN_RETRY_LOOP.get():
            return fn()
        reset = _IN_RETRY_LOOP.set(True)
        try:
            try:
                # Fast path: most calls succeed at once, and building a tenacity loop costs more than the call's
                # own bookkeeping. Only a retryable failure pays for the loop.
                return fn()
            except TruConnectError as exc:
                if not self.should_retry(exc, idempotent=idempotent) or self.max_retries < 1:
                    raise
                first = exc
            import tenacity  # only once a call has failed: tenacity costs ~20 ms to import at DAG parse time

            retrying = tenacity.Retrying(sleep=self.sleep, **self._tenacity_kwargs(idempotent, describe))  # type: ignore[arg-type]
            result: T = retrying(_replaying(first, fn))
        finally:
            _IN_RETRY_LOOP.reset(reset)
        return result

    async def acall(self, fn: Callable[[], Awaitable[T]], *, idempotent: bool, describe: str) -> T:
        """Async twin of :meth:`call`."""
        if _IN_RETRY_LOOP.get():
            return await fn()
        reset = _IN_RETRY_LOOP.set(True)
        try:
            try:
                return await fn()
            except TruConnectError as exc:
                if not self.should_retry(exc, idempotent=idempotent) or self.max_retries < 1:
                    raise
                first = exc
            import tenacity

            retrying = tenacity.AsyncRetrying(sleep=self.asleep, **self._tenacity_kwargs(idempotent, describe))  # type: ignore[arg-type]
            return await retrying(_areplaying(first, fn))
        finally:
            _IN_RETRY_LOOP.reset(reset)


def _replaying(first: BaseException, fn: Callable[[], T]) -> Callable[[], T]:
    """An attempt function whose first attempt is the failure already seen, so tenacity counts and logs it."""
    pending = [first]

    def attempt() -> T:
        if pending:
            raise pending.pop()
        return fn()

    return attempt


def _areplaying(first: BaseException, fn: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """Async twin of :func:`_replaying`."""
    pending = [first]

    async def attempt() -> T:
        if pending:
            raise pending.pop()
        return await fn()

    return attempt


__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]
