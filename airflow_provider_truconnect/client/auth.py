"""The token manager: hands out valid tokens, renewing them through the token endpoint.

The token model lives in :mod:`.tokens` and the process-wide cache in :mod:`.token_cache`.

Connect API access tokens live 5 minutes and, when a refresh token is issued, it lives 30
[DOC docs/connect-api.md §1.3]. The manager renews a token shortly before it expires, prefers the ``refresh_token``
grant while a refresh token is valid, falls back to ``client_credentials`` when the refresh is refused or none was
issued, and lets exactly one caller per cache key and process talk to the token endpoint at a time (single flight):
threads, the tasks of one event loop and the tasks of different event loops all take the same per-key lock. When that
renewal fails, the callers already waiting for it get its failure rather than repeating it.

With the connection extra ``oauth_cache=host`` the processes of one user on one host share the token as well, through
an encrypted file and a file lock (:mod:`airflow_provider_truconnect.client.host_cache`): the in-process cache is
consulted first, the file on a miss, and a renewal holds the per-key lock, then the file lock (always in that order).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.errors import TruConnectAuthError, TruConnectError
from airflow_provider_truconnect.client.token_cache import (
    DEFAULT_TOKEN_CACHE,
    TokenCache,
    acquire_without_blocking,
)
from airflow_provider_truconnect.client.tokens import (
    AsyncTokenFetcher,
    CacheKey,
    Clock,
    Token,
    TokenFetcher,
    build_grant,
)

if TYPE_CHECKING:
    from airflow_provider_truconnect.client.host_cache import HostTokenStore, SharedEntry

log = logging.getLogger(__name__)

__all__ = ["TokenManager"]


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
        from airflow_provider_truconnect.client.file_lock import in_thread

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
