"""OAuth2 tokens: the token model, the process-wide token cache and the token manager.

Connect API access tokens live 5 minutes and, when a refresh token is issued, it lives 30 [DOC connect-api.md §1.3].
The manager renews a token shortly before it expires, prefers the ``refresh_token`` grant while a refresh token is
valid, falls back to ``client_credentials`` when the refresh is refused or none was issued, and lets exactly one
caller per cache key and process talk to the token endpoint at a time (single flight): threads, the tasks of one event
loop and the tasks of different event loops all take the same per-key lock. When that renewal fails, the callers
already waiting for it get its failure rather than repeating it.

With the connection extra ``oauth_cache=host`` the processes of one user on one host share the token as well, through
an encrypted file and a file lock (:mod:`airflow_provider_truconnect.client.host_cache`): the in-process cache is
consulted first, the file on a miss, and a renewal holds the per-key lock, then the file lock (always in that order).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.errors import TruConnectAuthError, TruConnectError, TruConnectServerError

if TYPE_CHECKING:
    from airflow_provider_truconnect.client.host_cache import HostTokenStore, SharedEntry

log = logging.getLogger(__name__)

#: Renew this many seconds before expiry, so that a token never expires between the check and the API's own check
#: (clock drift, a slow request, a retry wait). Bounded to a fraction of very short lifetimes by :func:`renew_skew`.
REFRESH_SKEW_SECONDS = 30.0
#: Lifetime assumed when the token response has no usable ``expires_in``: short, so that a token is never used long
#: past a real lifetime we do not know.
DEFAULT_EXPIRES_IN = 60.0

CacheKey = tuple[str, str, str, str]
Clock = Callable[[], float]
#: Rejected access tokens remembered per key (as digests), so that one found in the host cache file is not adopted.
_REJECTED_KEPT = 16


def renew_skew(lifetime: float) -> float:
    """Seconds before expiry at which a token with the given lifetime is renewed.

    :param lifetime: the token's lifetime in seconds.
    :return: ``REFRESH_SKEW_SECONDS``, but at most a fifth of the lifetime, so short-lived tokens are still used.
    """
    return min(REFRESH_SKEW_SECONDS, max(lifetime, 0.0) / 5)


@dataclass(frozen=True)
class Token:
    """An access token with absolute expiry times (seconds on the manager's clock).

    Token values are kept out of ``repr`` so that a token object can be logged or shown in a traceback.
    """

    access_token: str = field(repr=False)
    token_type: str
    obtained_at: float
    expires_at: float
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None
    scope: str | None = None

    @property
    def lifetime(self) -> float:
        """Seconds between obtaining the token and its expiry."""
        return self.expires_at - self.obtained_at

    def is_fresh(self, now: float) -> bool:
        """Whether the token can still be used without renewing it first.

        :param now: the current time on the manager's clock.
        """
        return now < self.expires_at - renew_skew(self.lifetime)

    def can_refresh(self, now: float) -> bool:
        """Whether the refresh token exists and is still valid for a little while.

        :param now: the current time on the manager's clock.
        """
        if not self.refresh_token or self.refresh_expires_at is None:
            return False
        return now < self.refresh_expires_at - renew_skew(self.refresh_expires_at - self.obtained_at)

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value."""
        return f"Bearer {self.access_token}"


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value > 0:
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if number > 0 else None
    return None


def parse_token_response(body: Any, now: float, previous: Token | None = None) -> Token:
    """Turn a Keycloak token response into a :class:`Token`.

    :param body: the decoded JSON body.
    :param now: the time the request was sent, on the manager's clock.
    :param previous: the token being refreshed; its refresh token is kept when the answer carries no new one.
    :return: the token.
    :raises TruConnectServerError: when the body has no usable ``access_token`` or is not a bearer token.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise TruConnectServerError("Token endpoint answered without an access_token", retryable=True)
    token_type = str(body.get("token_type") or "Bearer")
    if token_type.lower() != "bearer":
        raise TruConnectAuthError(f"Token endpoint issued an unsupported token type {token_type!r}; expected Bearer")
    expires_in = _seconds(body.get("expires_in")) or DEFAULT_EXPIRES_IN
    refresh_token = body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None
    refresh_expires_at: float | None = None
    if refresh_token:
        refresh_in = _seconds(body.get("refresh_expires_in"))
        # Keycloak sends refresh_expires_in=0 for offline tokens; without a lifetime, assume the documented 30 min.
        refresh_expires_at = now + (refresh_in or 1800.0)
    elif previous is not None and previous.refresh_token and previous.can_refresh(now):
        refresh_token, refresh_expires_at = previous.refresh_token, previous.refresh_expires_at
    return Token(
        access_token=body["access_token"],
        token_type="Bearer",
        obtained_at=now,
        expires_at=now + expires_in,
        refresh_token=refresh_token,
        refresh_expires_at=refresh_expires_at,
        scope=body.get("scope") if isinstance(body.get("scope"), str) else None,
    )


@dataclass(frozen=True)
class GrantRequest:
    """One token-endpoint request: the form, optional HTTP Basic credentials and the grant's name (for logs)."""

    grant_type: str
    form: dict[str, str] = field(repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)


def build_grant(config: ClientConfig, refresh_from: Token | None) -> GrantRequest:
    """Build the ``refresh_token`` grant when ``refresh_from`` is given, else the ``client_credentials`` grant.

    :param config: the client configuration (credentials, scope, client authentication style).
    :param refresh_from: the token whose refresh token should be used, or ``None``.
    :return: the request to send.
    """
    if refresh_from is not None and refresh_from.refresh_token:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_from.refresh_token}
    else:
        form = {"grant_type": "client_credentials"}
    if config.scope:
        form["scope"] = config.scope
    if config.client_auth == "client_secret_basic":
        return GrantRequest(form["grant_type"], form, (config.client_id, config.client_secret))
    form.update(client_id=config.client_id, client_secret=config.client_secret)
    return GrantRequest(form["grant_type"], form)


def token_endpoint_error(status: int, body: Any, correlation_id: str | None = None) -> Exception:
    """Map a failed token-endpoint answer to an exception [INFERRED from Keycloak, connect-api.md §1.4].

    :param status: HTTP status.
    :param body: decoded JSON body, or ``None`` when it was not JSON.
    :param correlation_id: the request's correlation id.
    :return: a :class:`TruConnectAuthError` for 4xx, a retryable :class:`TruConnectServerError` for 5xx.
    """
    from airflow_provider_truconnect.client.responses import bounded

    error = bounded(body.get("error"), 200) if isinstance(body, Mapping) else None
    description = bounded(body.get("error_description"), 200) if isinstance(body, Mapping) else None
    if status >= 500 or status == 429:
        return TruConnectServerError(
            "Token endpoint failed", status_code=status, error_type=error, correlation_id=correlation_id
        )
    return TruConnectAuthError(
        "Token endpoint refused the credentials" if status == 401 else "Token request rejected",
        status_code=status,
        oauth_error=error,
        oauth_error_description=description,
        correlation_id=correlation_id,
    )


class TokenFetcher(Protocol):
    """Sends one grant request; returns the token or raises (auth errors, connection errors...)."""

    def __call__(self, grant: GrantRequest, previous: Token | None) -> Token: ...


class AsyncTokenFetcher(Protocol):
    """Async twin of :class:`TokenFetcher`."""

    def __call__(self, grant: GrantRequest, previous: Token | None) -> Awaitable[Token]: ...


#: Every live cache, so that a forked child can replace their locks (see :meth:`TokenCache._after_fork`).
_CACHES: weakref.WeakSet[TokenCache] = weakref.WeakSet()


def _reset_caches_after_fork() -> None:
    for cache in list(_CACHES):
        cache._after_fork()


async def acquire_without_blocking(lock: threading.Lock, poll: float = 0.005) -> None:
    """Acquire a ``threading.Lock`` from a coroutine without blocking its event loop.

    Polls instead of handing ``lock.acquire`` to a worker thread: a cancelled wait then never leaves the lock taken by
    a thread nobody will release it from. Contention only happens during a renewal, so polls are few.

    :param lock: the lock.
    :param poll: seconds between attempts.
    """
    while not lock.acquire(blocking=False):
        await asyncio.sleep(poll)


class TokenCache:
    """Process-wide store of tokens keyed by (token URL, client id, scope, secret digest).

    Holds one ``threading.Lock`` per key, taken by every renewal of that key (threads block on it; coroutines poll it
    without blocking their loop), and one ``asyncio.Lock`` per key and event loop so that the coroutines of one loop
    queue for it in order. Renewals are therefore single-flight per key across threads and event loops, while sync and
    async code share the same tokens. The last failed renewal of each key is kept, numbered, so that callers who were
    already waiting for that renewal share its failure instead of repeating it one after the other.

    A child process forked while another thread held one of the locks would wait for it forever; the locks are
    replaced in the child (the tokens stay: they are still valid there).

    :param host_store: where configurations with ``oauth_cache=host`` share their tokens with the other processes of
        this host (default: the store of the user's cache directory, see
        :func:`~airflow_provider_truconnect.client.host_cache.default_directory`).
    """

    def __init__(self, host_store: HostTokenStore | None = None) -> None:
        self._tokens: dict[CacheKey, Token] = {}
        self._failures: dict[CacheKey, tuple[int, TruConnectError]] = {}
        self._rejected: dict[CacheKey, collections.deque[bytes]] = {}
        self._host_store = host_store
        self._new_locks()
        _CACHES.add(self)

    def host_store(self) -> HostTokenStore:
        """The store shared with the other processes of this host, for configurations with ``oauth_cache=host``."""
        from airflow_provider_truconnect.client.host_cache import store_for

        return self._host_store if self._host_store is not None else store_for()

    def _new_locks(self) -> None:
        self._guard = threading.Lock()
        self._thread_locks: dict[CacheKey, threading.Lock] = {}
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[CacheKey, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    def _after_fork(self) -> None:
        # Only the forking thread exists in the child; a lock some other thread held stays held forever.
        self._new_locks()

    def get(self, key: CacheKey) -> Token | None:
        """Return the cached token for ``key``, if any."""
        return self._tokens.get(key)

    def put(self, key: CacheKey, token: Token) -> None:
        """Store ``token`` for ``key``."""
        with self._guard:
            self._tokens[key] = token

    def invalidate(self, key: CacheKey, access_token: str | None = None) -> None:
        """Forget the token of ``key``; with ``access_token``, only if it is still that token.

        Keeping the refresh token lets the next renewal use the cheaper grant when it is still valid. A given
        ``access_token`` is also remembered as rejected, so that it is not taken back from the host cache file.
        """
        with self._guard:
            if access_token is not None:
                rejected = self._rejected.setdefault(key, collections.deque(maxlen=_REJECTED_KEPT))
                rejected.append(_digest(access_token))
            current = self._tokens.get(key)
            if current is None or (access_token is not None and current.access_token != access_token):
                return
            self._tokens[key] = Token(
                access_token=current.access_token,
                token_type=current.token_type,
                obtained_at=current.obtained_at,
                expires_at=float("-inf"),
                refresh_token=current.refresh_token,
                refresh_expires_at=current.refresh_expires_at,
                scope=current.scope,
            )

    def clear(self) -> None:
        """Forget every token (tests, credential rotation)."""
        with self._guard:
            self._tokens.clear()
            self._rejected.clear()

    def was_rejected(self, key: CacheKey, access_token: str) -> bool:
        """Whether the API answered 401 to ``access_token`` in this process (see :meth:`invalidate`)."""
        digest = _digest(access_token)
        with self._guard:
            return digest in self._rejected.get(key, ())

    def failure_mark(self, key: CacheKey) -> int:
        """The number of renewal failures of ``key`` so far; take it before waiting for a renewal."""
        failure = self._failures.get(key)
        return failure[0] if failure is not None else 0

    def record_failure(self, key: CacheKey, exc: TruConnectError) -> None:
        """Remember that a renewal of ``key`` failed with ``exc`` (call it while holding the key's lock)."""
        with self._guard:
            self._failures[key] = (self.failure_mark(key) + 1, exc)

    def failure_since(self, key: CacheKey, mark: int) -> TruConnectError | None:
        """A copy of the last renewal failure of ``key`` if it happened after ``mark`` (see :meth:`failure_mark`)."""
        failure = self._failures.get(key)
        if failure is None or failure[0] <= mark:
            return None
        # A copy: one exception object raised in many threads or tasks would pile up their tracebacks.
        return copy.copy(failure[1])

    def thread_lock(self, key: CacheKey) -> threading.Lock:
        """The lock serialising renewals of ``key`` across threads and event loops."""
        with self._guard:
            return self._thread_locks.setdefault(key, threading.Lock())

    def loop_lock(self, key: CacheKey) -> asyncio.Lock:
        """The lock serialising renewals of ``key`` across the tasks of the running event loop."""
        loop = asyncio.get_running_loop()
        with self._guard:
            locks = self._loop_locks.setdefault(loop, {})
            return locks.setdefault(key, asyncio.Lock())


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


os.register_at_fork(after_in_child=_reset_caches_after_fork)

#: The default cache: one per process, shared by every hook, client and trigger of the process.
DEFAULT_TOKEN_CACHE = TokenCache()


class TokenManager:
    """Hands out valid tokens for one configuration, renewing them through a fetcher.

    With ``config.oauth_cache == "host"`` a token missing from the process cache is looked up in the host cache file
    first, and a renewal is made by one process of the host for all of them; tokens read from the file go through
    ``on_new_token`` too, the first time this process sees them.

    :param config: the client configuration.
    :param cache: the token cache (default: the process-wide one).
    :param clock: returns the current time in seconds; injectable for tests (with the host cache, every process must
        use the same clock: the wall clock, the default of the clients).
    :param on_new_token: called with every new access and refresh token value (e.g. Airflow's ``mask_secret``).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        cache: TokenCache | None = None,
        clock: Clock,
        on_new_token: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.cache = cache if cache is not None else DEFAULT_TOKEN_CACHE
        self.clock = clock
        self.on_new_token = on_new_token
        self.key: CacheKey = config.cache_key
        self.host: HostTokenStore | None = self.cache.host_store() if config.oauth_cache == "host" else None

    def _usable(self) -> Token | None:
        token = self.cache.get(self.key)
        return token if token is not None and token.is_fresh(self.clock()) else None

    def _store(self, token: Token) -> Token:
        for value in (token.access_token, token.refresh_token):
            if value and self.on_new_token is not None:
                self.on_new_token(value)
        self.cache.put(self.key, token)
        return token

    async def _astore(self, token: Token, on_new_token: Callable[[str], Awaitable[None]]) -> Token:
        for value in (token.access_token, token.refresh_token):
            if value:
                await on_new_token(value)
        self.cache.put(self.key, token)
        return token

    def invalidate(self, token: Token) -> None:
        """Mark ``token`` as rejected (the API answered 401 with it), unless it was already replaced.

        With the host cache, the file is left alone here (no file work on an event loop): the renewal that follows
        holds the file lock and replaces the file's token only if it is still this one.
        """
        self.cache.invalidate(self.key, token.access_token)

    def get_token(self, fetch: TokenFetcher) -> Token:
        """Return a fresh token, renewing it first if needed; one renewal at a time per cache key.

        :param fetch: sends a grant request.
        :return: a token that is fresh now.
        """
        token = self._usable()
        if token is not None:
            return token
        mark = self.cache.failure_mark(self.key)
        with self.cache.thread_lock(self.key):
            # Another thread may have renewed it while this one waited for the lock, or failed to.
            token = self._usable()
            if token is not None:
                return token
            self._raise_shared_failure(mark)
            try:
                if self.host is not None and self.host.usable():
                    return self._renew_shared(self.host, fetch)
                return self._store(self._renew_sync(fetch, self._source(None)))
            except TruConnectError as exc:
                self.cache.record_failure(self.key, exc)
                raise

    def _raise_shared_failure(self, mark: int) -> None:
        failure = self.cache.failure_since(self.key, mark)
        if failure is not None:
            log.debug("Token renewal failed while this caller waited for it; sharing that failure")
            raise failure

    def _adoptable(self, entry: SharedEntry | None) -> Token | None:
        """The host cache's token, if it is fresh and this process has not seen the API reject it."""
        token = entry.token if entry is not None else None
        if token is None or not token.is_fresh(self.clock()) or self.cache.was_rejected(self.key, token.access_token):
            return None
        return token

    def _source(self, entry: SharedEntry | None) -> Token | None:
        """The token whose refresh token renews best: the newest of the file's and the process's that can refresh."""
        now = self.clock()
        candidates = [t for t in (entry.token if entry else None, self.cache.get(self.key)) if t and t.can_refresh(now)]
        return max(candidates, key=lambda t: t.obtained_at, default=None)

    def _replace_rejected(self, entry: SharedEntry | None) -> SharedEntry:
        """The file's entry with its token marked expired if this process saw the API reject it (under the file lock,
        so the file still holds that token: a compare-and-swap). Its refresh token stays usable."""
        from airflow_provider_truconnect.client.host_cache import SharedEntry

        if entry is None:
            return SharedEntry()
        token = entry.token
        if token is not None and self.cache.was_rejected(self.key, token.access_token):
            return replace(entry, token=replace(token, expires_at=float("-inf")))
        return entry

    def _renew_shared(self, host: HostTokenStore, fetch: TokenFetcher) -> Token:
        # The file is replaced by an atomic rename, so reading it without the lock sees a whole file.
        entry = host.read(self.config)
        token = self._adoptable(entry)
        if token is not None:
            return self._store(token)
        mark = entry.failures if entry is not None else 0
        lock = host.lock(self.config)
        try:
            if lock.acquire():
                entry = host.read(self.config)
                token = self._adoptable(entry)
                if token is not None:
                    return self._store(token)
                if entry is not None and entry.failures > mark:
                    log.debug("Token renewal failed in another process while this one waited; sharing that failure")
                    raise entry.failure_error()
            entry = self._replace_rejected(entry)
            try:
                token = self._renew_sync(fetch, self._source(entry))
            except TruConnectError as exc:
                host.write(self.config, entry.failed(exc))
                raise
            host.write(self.config, replace(entry, token=token))
            return self._store(token)
        finally:
            lock.release()

    def _renew_sync(self, fetch: TokenFetcher, source: Token | None) -> Token:
        if source is not None:
            try:
                return fetch(build_grant(self.config, source), source)
            except TruConnectAuthError as exc:
                log.info("Refresh token refused (%s); requesting a new token with client credentials", exc.oauth_error)
        return fetch(build_grant(self.config, None), None)

    async def aget_token(self, fetch: AsyncTokenFetcher, on_new_token: Callable[[str], Awaitable[None]]) -> Token:
        """Async twin of :meth:`get_token`; file work (host cache) runs in worker threads, and the file lock is polled.

        :param fetch: sends a grant request asynchronously.
        :param on_new_token: awaited with every new token value (e.g. Airflow's ``amask_secret``).
        :return: a token that is fresh now.
        """
        token = self._usable()
        if token is not None:
            return token
        mark = self.cache.failure_mark(self.key)
        async with self.cache.loop_lock(self.key):
            key_lock = self.cache.thread_lock(self.key)
            await acquire_without_blocking(key_lock)
            try:
                token = self._usable()
                if token is not None:
                    return token
                self._raise_shared_failure(mark)
                try:
                    if self.host is not None and await self.host.ausable():
                        return await self._arenew_shared(self.host, fetch, on_new_token)
                    return await self._astore(await self._renew_async(fetch, self._source(None)), on_new_token)
                except TruConnectError as exc:
                    self.cache.record_failure(self.key, exc)
                    raise
            finally:
                key_lock.release()

    async def _arenew_shared(
        self, host: HostTokenStore, fetch: AsyncTokenFetcher, on_new_token: Callable[[str], Awaitable[None]]
    ) -> Token:
        from airflow_provider_truconnect.client.host_cache import in_thread

        entry = await in_thread(host.read, self.config)
        token = self._adoptable(entry)
        if token is not None:
            return await self._astore(token, on_new_token)
        mark = entry.failures if entry is not None else 0
        lock = host.lock(self.config)
        try:
            if await lock.aacquire():
                entry = await in_thread(host.read, self.config)
                token = self._adoptable(entry)
                if token is not None:
                    return await self._astore(token, on_new_token)
                if entry is not None and entry.failures > mark:
                    log.debug("Token renewal failed in another process while this one waited; sharing that failure")
                    raise entry.failure_error()
            entry = self._replace_rejected(entry)
            try:
                token = await self._renew_async(fetch, self._source(entry))
            except TruConnectError as exc:
                await in_thread(host.write, self.config, entry.failed(exc))
                raise
            await in_thread(host.write, self.config, replace(entry, token=token))
            return await self._astore(token, on_new_token)
        finally:
            lock.release()

    async def _renew_async(self, fetch: AsyncTokenFetcher, source: Token | None) -> Token:
        if source is not None:
            try:
                return await fetch(build_grant(self.config, source), source)
            except TruConnectAuthError as exc:
                log.info("Refresh token refused (%s); requesting a new token with client credentials", exc.oauth_error)
        return await fetch(build_grant(self.config, None), None)
