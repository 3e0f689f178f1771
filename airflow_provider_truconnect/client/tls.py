"""TLS trust: which certificates the API's certificate is checked against, decided once for both transports.

The connection's ``verify_ssl`` extra decides, whatever the environment says:

* ``false``: no verification (a test server; never in production);
* a path: that CA bundle file (or a directory of hashed CA certificates);
* ``true``: the certifi bundle that ships with requests and httpx.

Only when the connection does not set ``verify_ssl`` are environment variables honoured, in this order, the first
non-empty one winning: ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``SSL_CERT_FILE``, ``SSL_CERT_DIR``; without any of
them, the certifi bundle. The sync client (requests) and the async client of the triggers (httpx) apply the same
:class:`TlsTrust`, so a task and its trigger never disagree about a certificate. Left to themselves the two libraries
differ (requests reads the first two variables and lets them override the session's setting, httpx reads the last
two), which is why neither is.

A path that names no file or directory is a configuration error naming where it came from, before any network call.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from airflow_provider_truconnect.client.errors import TruConnectConfigError, TruConnectConnectionError

#: Environment variables naming CA certificates, honoured in this order when the connection is silent.
TRUST_ENV_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
_BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class TlsTrust:
    """The certificates to verify the server against.

    :param verify: whether to verify the server's certificate at all.
    :param cafile: a CA bundle file.
    :param capath: a directory of hashed CA certificates.
    :param source: where the setting came from (``extra.verify_ssl``, an environment variable, or ``certifi``).
    """

    verify: bool
    cafile: str | None = None
    capath: str | None = None
    source: str = "certifi"

    @property
    def requests_verify(self) -> bool | str:
        """The ``verify`` argument for requests: ``False`` or a path, never ``True`` (which the environment could
        override)."""
        if not self.verify:
            return False
        return self.cafile or self.capath or _certifi_bundle()

    def ssl_context(self) -> ssl.SSLContext | bool:
        """An SSL context for httpx (``False`` when not verifying); shared per setting, as building one costs ~0.1 s."""
        return _ssl_context(self)


def _certifi_bundle() -> str:
    import certifi

    return str(certifi.where())


@functools.lru_cache(maxsize=16)
def _ssl_context(trust: TlsTrust) -> ssl.SSLContext | bool:
    if not trust.verify:
        return False
    if trust.capath:
        return ssl.create_default_context(capath=trust.capath)
    return ssl.create_default_context(cafile=trust.cafile or _certifi_bundle())


def _ca_location(where: str, value: str) -> TlsTrust:
    path = os.path.expanduser(value.strip())
    if os.path.isfile(path):
        return TlsTrust(True, cafile=path, source=where)
    if os.path.isdir(path):
        return TlsTrust(True, capath=path, source=where)
    raise TruConnectConfigError(
        where, f"names no CA bundle file or directory ({value.strip()[:200]!r}); give an existing path, true or false"
    )


def parse_verify_ssl(value: object) -> bool | str | None:
    """Read the ``verify_ssl`` extra: a boolean (also as text), a CA path, or ``None`` when not set.

    :raises TruConnectConfigError: naming ``extra.verify_ssl`` for any other type.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        return _BOOLEAN_WORDS[word] if word in _BOOLEAN_WORDS else value.strip()
    raise TruConnectConfigError(
        "extra.verify_ssl", f"must be true, false or the path of a CA bundle, got {type(value).__name__}"
    )


def resolve_trust(verify_ssl: bool | str | None, environ: Mapping[str, str] | None = None) -> TlsTrust:
    """Decide the TLS trust from the connection's setting and, only when it is ``None``, the environment.

    :param verify_ssl: the ``verify_ssl`` extra: ``True``, ``False``, a CA path, or ``None`` when not set.
    :param environ: the environment (default: ``os.environ``).
    :return: the trust both transports apply.
    :raises TruConnectConfigError: when a path names nothing, naming ``extra.verify_ssl`` or the variable.
    """
    if verify_ssl is False:
        return TlsTrust(False, source="extra.verify_ssl")
    if verify_ssl is True:
        return TlsTrust(True, source="extra.verify_ssl")
    if isinstance(verify_ssl, str):
        return _ca_location("extra.verify_ssl", verify_ssl)
    env = os.environ if environ is None else environ
    for name in TRUST_ENV_VARS:
        value = env.get(name, "")
        if value.strip():
            return _ca_location(f"environment variable {name}", value)
    return TlsTrust(True)


def caused_by(exc: BaseException, *types: type[BaseException]) -> bool:
    """Whether ``exc`` or anything in its cause chain (``__cause__``, ``__context__``, a wrapped first argument, a
    urllib3 ``reason``) is one of ``types``; transports wrap the interesting error several levels deep.

    :param exc: the exception a transport raised.
    :param types: the exception classes to look for.
    """
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, types):
            return True
        reason = getattr(seen, "reason", None)
        first = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = (reason if isinstance(reason, BaseException) else None) or seen.__cause__ or seen.__context__ or first
    return False


def tls_error(exc: BaseException, what: str, trust: TlsTrust, correlation_id: str | None) -> TruConnectConnectionError:
    """The error for a failed TLS exchange, never retried.

    A certificate refused during the handshake proves the request never left (``sent=False``); any other TLS failure
    may have happened after it was sent.

    :param exc: the transport's exception, an ``ssl.SSLError`` somewhere in its chain.
    :param what: ``METHOD /path`` of the request.
    :param trust: the trust the certificate was checked against, named in the message.
    :param correlation_id: the request's correlation id.
    """
    refused = caused_by(exc, ssl.SSLCertVerificationError)
    problem = "the server's certificate is not trusted" if refused else f"TLS failed ({type(exc).__name__})"
    return TruConnectConnectionError(
        f"{what}: {problem} (trust from {trust.source}; set the connection's verify_ssl to a CA bundle path to "
        "trust a private CA)",
        correlation_id=correlation_id,
        retryable=False,
        sent=not refused,
    )
