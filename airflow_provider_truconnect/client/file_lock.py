"""A cross-process lock on a file (``fcntl.flock``) that never blocks an event loop, and file work off the loop.

Used by the host token cache (:mod:`.host_cache`). A descriptor inherited across ``fork`` would share the parent's
lock with the child, so a forked child closes the lock files it inherited.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("airflow_provider_truconnect.client.host_cache")

T = TypeVar("T")

__all__ = ["FileLock", "fcntl", "in_thread"]
_POLL_FIRST, _POLL_MAX = 0.001, 0.02


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run file work in a worker thread; if the caller is cancelled meanwhile, wait for the work to finish first.

    The wait matters for writes: the caller releases the file lock when it unwinds, and must not do so while its
    write is still in flight.

    :param function: the blocking function.
    :param args: its arguments.
    :return: its result.
    """
    future = asyncio.get_running_loop().run_in_executor(None, function, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


class FileLock:
    """An exclusive ``flock`` on one lock file, opened afresh for each holding (a descriptor inherited across
    ``fork`` would share the lock with the parent).

    :param path: the lock file.
    :param wait: longest wait in seconds before :meth:`acquire` / :meth:`aacquire` give up.
    """

    def __init__(self, path: Path, wait: float) -> None:
        self.path = path
        self.wait = wait
        self._fd: int | None = None
        self.held = False

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise OSError(f"{self.path} is not a regular file of this user")
        self._fd = fd
        _OPEN_LOCKS.add(self)

    def _try(self) -> bool:
        assert fcntl is not None and self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        return True

    def acquire(self) -> bool:
        """Take the lock, waiting at most :attr:`wait` seconds.

        :return: whether the lock is held (``False``: it could not be opened, or another process held it too long).
        """
        try:
            self._open()
        except OSError as exc:
            log.warning("Host token cache: cannot open the lock file (%s); renewing without it", exc)
            return False
        deadline, pause = time.monotonic() + self.wait, _POLL_FIRST
        while not self._try():
            if time.monotonic() >= deadline:
                return self._gave_up()
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)
        return True

    async def aacquire(self) -> bool:
        """Async twin of :meth:`acquire`: opens the file in a worker thread and polls the lock without blocking."""
        try:
            await in_thread(self._open)
        except OSError as exc:
            log.warning("Host token cache: cannot open the lock file (%s); renewing without it", exc)
            return False
        deadline, pause = time.monotonic() + self.wait, _POLL_FIRST
        while not self._try():
            if time.monotonic() >= deadline:
                return self._gave_up()
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)
        return True

    def _gave_up(self) -> bool:
        log.warning(
            "Host token cache: another process held the lock for more than %.0f s; renewing the token without it",
            self.wait,
        )
        self.release()
        return False

    def release(self) -> None:
        """Release the lock (closing the descriptor releases it); safe to call when not held."""
        fd, self._fd, self.held = self._fd, None, False
        if fd is not None:
            os.close(fd)


_OPEN_LOCKS: weakref.WeakSet[FileLock] = weakref.WeakSet()


def _close_inherited_locks() -> None:
    # A lock file the parent had open is shared with the child, and its flock lasts until every copy is closed: the
    # child drops its copies, so a parent's renewal does not stay locked for the child's lifetime.
    for lock in list(_OPEN_LOCKS):
        fd, lock._fd, lock.held = lock._fd, None, False
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


os.register_at_fork(after_in_child=_close_inherited_locks)
