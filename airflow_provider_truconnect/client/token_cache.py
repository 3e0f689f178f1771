"""The process-wide token cache: tokens per key, the per-key locks that make renewals single-flight across threads
and event loops, and what a forked child must not inherit.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import os
import threading
import weakref
from typing import TYPE_CHECKING

from airflow_provider_truconnect.client.errors import TruConnectError
from airflow_provider_truconnect.client.tokens import CacheKey, Token

if TYPE_CHECKING:
    from airflow_provider_truconnect.client.host_cache import HostTokenStore

#: Rejected access tokens remembered per key (as digests), so that one found in the host cache file is not adopted.
_REJECTED_KEPT = 16


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
