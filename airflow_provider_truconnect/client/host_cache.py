"""Tokens shared by the processes of one user on one host: the ``oauth_cache=host`` connection extra.

Every task process otherwise obtains its own token; with ``oauth_cache=host`` the processes of one user on one host
share it through a small file, and a file lock makes renewal single-flight across them (the in-process per-key lock
of :class:`~airflow_provider_truconnect.client.token_cache.TokenCache` is always taken first, the file lock second,
never the other way round). :class:`~airflow_provider_truconnect.client.auth.TokenManager` drives it; this module only
stores, locks and protects the file.

The rules:

* **Where.** ``$XDG_CACHE_HOME/airflow-provider-truconnect`` (else ``~/.cache/airflow-provider-truconnect``), created
  with mode 0700. A directory that is a symlink, belongs to another user, or is open to group or others is refused: the
  host cache is then off for the process (one WARNING naming the directory and the fix), and tokens are cached per
  process as without the extra.
* **What.** One file per token URL, client id and scope, named by a hash of the three (the name reveals neither the
  client id nor the secret), holding the access token, the refresh token, their expiry times and the number of failed
  renewals so far. Expiry times are on the token manager's clock, which must therefore be the wall clock (the default)
  for every process.
* **Protection.** The content is encrypted and authenticated with AES-256-GCM under a key derived by HKDF-SHA256 from
  the client secret, with the token URL, client id and scope as HKDF info; the file's header (format version and name)
  is authenticated too. Without the client secret the file is useless. Files are written 0600 through a temporary
  file and an atomic rename, and opened without following symlinks.
* **What is ignored (and replaced by the next renewal).** A missing file; one that is not a regular file, belongs to
  another user or is open to group or others; a corrupt or tampered one (authentication fails); one encrypted under
  another key (a rotated secret: the old token is never reused); one of another format version.
* **Locking.** ``fcntl.flock`` on a separate ``.lock`` file next to the token file, held while one process renews the
  token. Async callers never block their event loop: they poll with ``LOCK_NB`` and do file I/O in a worker thread. A
  wait is bounded (:data:`LOCK_WAIT_SECONDS`): a process stopped while holding the lock cannot stall the others, which
  then renew on their own. On platforms without ``fcntl`` (Windows) there is no cross-process lock, so the host cache
  is off (one WARNING) and tokens are cached per process.

What it does not protect against: any process of the same user can read the Airflow connection, hence the secret,
hence the tokens; the file only keeps them from other users and from anything that lacks the secret (backups of the
home directory, a leaked cache directory). Each Kubernetes task pod is its own host: there it shares nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
import tempfile
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_truconnect.client import errors as errors_module
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.errors import TruConnectError
from airflow_provider_truconnect.client.file_lock import FileLock, fcntl, in_thread

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from airflow_provider_truconnect.client.tokens import Token


log = logging.getLogger(__name__)

T = TypeVar("T")

#: Directory name under the user's cache directory.
DIRECTORY_NAME = "airflow-provider-truconnect"
#: Version of the file format; a file of another version is ignored and replaced.
FORMAT_VERSION = 1
_MAGIC = b"TCHC"
_NONCE_BYTES = 12
_HEADER_BYTES = len(_MAGIC) + 1 + _NONCE_BYTES
#: HKDF salt: fixed, so that the key depends only on the secret and the cache key.
_HKDF_SALT = b"airflow-provider-truconnect/host-token-cache"
#: Files larger than this are not token files.
_MAX_FILE_BYTES = 64 * 1024
#: Longest wait for another process's renewal before renewing without the lock. A renewal is one token request
#: (connect plus read timeout, 40 s by default); a holder that takes longer is stuck (stopped, or on a dead NFS mount).
LOCK_WAIT_SECONDS = 120.0
#: Polling of a contended lock: the first retry after 1 ms, doubling up to 20 ms.


def default_directory() -> Path:
    """The cache directory: ``$XDG_CACHE_HOME/airflow-provider-truconnect``, else under ``~/.cache``.

    :return: the path (not created).
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not base or not os.path.isabs(base):  # the XDG spec says to ignore a relative value
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / DIRECTORY_NAME


@dataclass(frozen=True)
class SharedEntry:
    """The content of one token file.

    :param token: the shared token, or ``None`` when no renewal has succeeded yet.
    :param failures: how many renewals failed so far (never reset; waiters compare it with what they saw before).
    :param failure: the last failure, as :func:`encode_failure` stored it.
    """

    token: Token | None = None
    failures: int = 0
    failure: Mapping[str, Any] | None = None

    def failed(self, exc: TruConnectError) -> SharedEntry:
        """This entry after one more failed renewal."""
        return replace(self, failures=self.failures + 1, failure=encode_failure(exc))

    def failure_error(self) -> TruConnectError:
        """The last failure, rebuilt for the processes that waited for that renewal."""
        return decode_failure(self.failure)


#: Attributes every :class:`TruConnectError` has, for a stored failure that lacks some.
_ERROR_DEFAULTS: dict[str, Any] = {
    "sent": True,
    "definite_rejection": False,
    "retry_after": None,
    "status_code": None,
    "error_type": None,
    "messages": (),
    "correlation_id": None,
}


def encode_failure(exc: TruConnectError) -> dict[str, Any]:
    """A JSON form of a renewal failure: its class name and plain attributes (messages never hold secrets).

    :param exc: the failure.
    :return: ``{"class": ..., "state": {...}}``.
    """
    state: dict[str, Any] = {}
    for name, value in vars(exc).items():
        if value is None or isinstance(value, str | int | float | bool):
            state[name] = value
        elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            state[name] = list(value)
    return {"class": type(exc).__name__, "state": state}


def decode_failure(data: Mapping[str, Any] | None) -> TruConnectError:
    """Rebuild a failure stored by :func:`encode_failure` in another process.

    :param data: the stored form.
    :return: an exception of the same class (a plain :class:`TruConnectError` for anything unknown), whose message
        says that the renewal failed in another process.
    """
    data = data or {}
    cls = getattr(errors_module, str(data.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, TruConnectError)):
        cls = TruConnectError
    state = dict(data.get("state") or {})
    if isinstance(state.get("messages"), list):
        state["messages"] = tuple(state["messages"])
    message = f"Token renewal failed in another process on this host: {state.pop('message', 'unknown error')}"
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(_ERROR_DEFAULTS, retryable=cls.default_retryable)
    exc.__dict__.update(state)
    exc.message = message
    exc.args = (exc._render(),)
    return exc


def _token_to_json(token: Token) -> dict[str, Any]:
    return {
        "access_token": token.access_token,
        "token_type": token.token_type,
        "obtained_at": token.obtained_at,
        "expires_at": token.expires_at,
        "refresh_token": token.refresh_token,
        "refresh_expires_at": token.refresh_expires_at,
        "scope": token.scope,
    }


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError("not a number")
    return float(value)


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _token_from_json(data: Any) -> Token | None:
    from airflow_provider_truconnect.client.tokens import Token

    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("access_token"), str) or not data["access_token"]:
        raise ValueError("no access token")
    refresh_expires_at = data.get("refresh_expires_at")
    return Token(
        access_token=data["access_token"],
        token_type=str(data.get("token_type") or "Bearer"),
        obtained_at=_number(data.get("obtained_at")),
        expires_at=_number(data.get("expires_at")),
        refresh_token=_optional_str(data.get("refresh_token")),
        refresh_expires_at=None if refresh_expires_at is None else _number(refresh_expires_at),
        scope=_optional_str(data.get("scope")),
    )


class _Unreadable(Exception):
    """Why a token file is ignored (the message is logged; it never holds file content)."""


@dataclass(frozen=True)
class _FileKey:
    """What one cache key needs for its file: the file's stem, the cipher and the header authenticated with it."""

    stem: str
    cipher: AESGCM
    header: bytes


class HostTokenStore:
    """The token files of one cache directory.

    Reads and writes never raise for a bad file or a failing disk: the cache is an optimisation, so a problem is logged
    and the caller carries on as if the file were missing.

    :param directory: the cache directory (default: :func:`default_directory`, resolved now).
    :param lock_wait: longest wait for another process's renewal, in seconds.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, lock_wait: float = LOCK_WAIT_SECONDS):
        self.directory = Path(directory) if directory is not None else default_directory()
        self.lock_wait = lock_wait
        self._usable: bool | None = None
        self._keys: dict[tuple[str, str, str, str], _FileKey] = {}
        self._guard = threading.Lock()
        _LIVE_STORES.add(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(directory={str(self.directory)!r})"

    def usable(self) -> bool:
        """Whether the host cache can be used: ``fcntl`` exists and the directory is private to this user.

        Creates the directory (mode 0700) when missing. Decided once per store; a refusal is logged once.

        :return: ``False`` when tokens must be cached per process instead.
        """
        if self._usable is None:
            with self._guard:
                if self._usable is None:
                    problem = self._check_directory()
                    if problem:
                        log.warning("Host token cache is off, tokens are cached per process: %s", problem)
                    self._usable = not problem
        return self._usable

    async def ausable(self) -> bool:
        """Async twin of :meth:`usable`: the first check (which may create the directory) runs in a worker thread."""
        if self._usable is None:
            return await in_thread(self.usable)
        return self._usable

    def _check_directory(self) -> str:
        if fcntl is None:
            return "this platform has no fcntl.flock, so processes cannot take turns renewing a token"
        path = self.directory
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                pass
            info = os.lstat(path)
        except OSError as exc:
            return f"cannot create {path} ({exc.strerror or type(exc).__name__})"
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            return f"{path} is not a directory (a symlink or a file); remove it"
        if info.st_uid != os.getuid():
            return f"{path} belongs to user id {info.st_uid}, not to this user ({os.getuid()}); remove it"
        if info.st_mode & 0o077:
            return (
                f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"make it private with: chmod 700 {path}"
            )
        return ""

    def _key(self, config: ClientConfig) -> _FileKey:
        cache_key = config.cache_key
        found = self._keys.get(cache_key)
        if found is None:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            info = json.dumps([FORMAT_VERSION, config.oauth_url, config.client_id, config.scope or ""]).encode()
            stem = hashlib.sha256(b"truconnect-host-cache-name\0" + info).hexdigest()[:32]
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=info).derive(
                config.client_secret.encode()
            )
            header = _MAGIC + bytes([FORMAT_VERSION])
            found = _FileKey(stem=stem, cipher=AESGCM(key), header=header)
            with self._guard:
                self._keys[cache_key] = found
        return found

    def path(self, config: ClientConfig) -> Path:
        """The token file of a configuration (its name is a hash: neither the client id nor the secret shows)."""
        return self.directory / f"{self._key(config).stem}.token"

    def lock(self, config: ClientConfig) -> FileLock:
        """The cross-process lock of a configuration's token file (not yet taken)."""
        return FileLock(self.directory / f"{self._key(config).stem}.lock", self.lock_wait)

    def read(self, config: ClientConfig) -> SharedEntry | None:
        """Read and decrypt the token file.

        :param config: the configuration (its secret derives the key).
        :return: the entry, or ``None`` when the file is missing or must be ignored (the reason is logged).
        """
        path = self.path(config)
        try:
            data = self._read_bytes(path)
        except FileNotFoundError:
            return None
        except (OSError, _Unreadable) as exc:
            log.info("Host token cache: ignoring %s (%s); the next renewal replaces it", path.name, exc)
            return None
        try:
            return self._decode(config, data)
        except _Unreadable as exc:
            log.info("Host token cache: ignoring %s (%s); the next renewal replaces it", path.name, exc)
            return None

    @staticmethod
    def _read_bytes(path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise _Unreadable(f"cannot open it: {exc.strerror or type(exc).__name__}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _Unreadable("not a regular file")
            if info.st_uid != os.getuid():
                raise _Unreadable(f"it belongs to user id {info.st_uid}")
            if info.st_mode & 0o077:
                raise _Unreadable(f"it is open to other users (mode {stat.S_IMODE(info.st_mode):04o})")
            if info.st_size > _MAX_FILE_BYTES:
                raise _Unreadable("too large")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                return handle.read(_MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)

    def _decode(self, config: ClientConfig, data: bytes) -> SharedEntry:
        from cryptography.exceptions import InvalidTag

        key = self._key(config)
        if len(data) < _HEADER_BYTES + 16 or data[: len(_MAGIC)] != _MAGIC:
            raise _Unreadable("not a token file")
        if data[len(_MAGIC)] != FORMAT_VERSION:
            raise _Unreadable(f"format version {data[len(_MAGIC)]}, expected {FORMAT_VERSION}")
        nonce, sealed = data[len(key.header) : _HEADER_BYTES], data[_HEADER_BYTES:]
        try:
            plain = key.cipher.decrypt(nonce, sealed, key.header + key.stem.encode())
        except InvalidTag:
            raise _Unreadable("written with another client secret, or altered") from None
        try:
            body = json.loads(plain)
            token = _token_from_json(body.get("token"))
            failures = body.get("failures", 0)
            failure = body.get("failure")
            if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
                raise ValueError("bad failure count")
            if failure is not None and not isinstance(failure, dict):
                raise ValueError("bad failure")
        except (ValueError, TypeError, AttributeError) as exc:
            raise _Unreadable(f"unexpected content ({type(exc).__name__})") from None
        return SharedEntry(token=token, failures=failures, failure=failure)

    def write(self, config: ClientConfig, entry: SharedEntry) -> None:
        """Encrypt and write the token file atomically (a temporary file renamed over it); errors are logged only.

        :param config: the configuration (its secret derives the key).
        :param entry: what to store.
        """
        key = self._key(config)
        body = {
            "token": None if entry.token is None else _token_to_json(entry.token),
            "failures": entry.failures,
            "failure": entry.failure,
        }
        nonce = os.urandom(_NONCE_BYTES)
        sealed = key.cipher.encrypt(nonce, json.dumps(body).encode(), key.header + key.stem.encode())
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{key.stem}.", suffix=".tmp", dir=self.directory)
        except OSError as exc:
            log.warning("Host token cache: cannot write in %s (%s)", self.directory, exc.strerror or exc)
            return
        try:
            with os.fdopen(fd, "wb") as handle:  # mkstemp creates it 0600
                handle.write(key.header + nonce + sealed)
            os.replace(temporary, self.directory / f"{key.stem}.token")
        except OSError as exc:
            log.warning("Host token cache: cannot write in %s (%s)", self.directory, exc.strerror or exc)
            try:
                os.unlink(temporary)
            except OSError:
                pass


_STORES: dict[Path, HostTokenStore] = {}
_STORES_GUARD = threading.Lock()
_LIVE_STORES: weakref.WeakSet[HostTokenStore] = weakref.WeakSet()


def _reset_after_fork() -> None:
    # Only the forking thread exists in the child; a guard some other thread held would stay held forever.
    global _STORES_GUARD
    _STORES_GUARD = threading.Lock()
    for store in list(_LIVE_STORES):
        store._guard = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def store_for(directory: str | os.PathLike[str] | None = None) -> HostTokenStore:
    """The process's store of a cache directory (default: :func:`default_directory`, read from the environment now).

    :param directory: the cache directory.
    :return: one store per directory, so that its checks and derived keys are made once.
    """
    path = Path(directory) if directory is not None else default_directory()
    with _STORES_GUARD:
        store = _STORES.get(path)
        if store is None:
            store = _STORES[path] = HostTokenStore(path)
        return store
