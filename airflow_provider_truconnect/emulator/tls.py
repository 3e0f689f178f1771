"""Throw-away certificates for HTTPS tests of the emulator and of its clients.

:func:`write_tls_files` writes, into a directory of the caller's (``tmp_path`` in pytest):

==========================  ============================================================================
``ca.pem``                  a test CA: trust this one to verify the emulator
``server.pem``              a server certificate for ``localhost``, ``127.0.0.1`` and ``::1`` signed by that CA,
                            followed by the CA certificate (the chain a server sends)
``server.key``              its private key
``other-host.pem``          a certificate for another host name only (:data:`OTHER_HOST`), signed by the same CA,
                            then the CA: a client connecting to ``127.0.0.1`` must refuse it (hostname mismatch)
``other-host.key``          its private key
``other-ca.pem``            an unrelated CA that signed nothing here: it stands for the "other" bundle a machine's
                            environment points at (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``), which must not verify
                            the emulator
==========================  ============================================================================

.. code-block:: python

    from airflow_provider_truconnect.emulator.server import run_emulator
    from airflow_provider_truconnect.emulator.tls import write_tls_files

    files = write_tls_files(tmp_path)
    with run_emulator(ssl_certfile=files.server_cert, ssl_keyfile=files.server_key) as emu:
        requests.get(emu.api_base + "/v2/products", verify=str(files.ca_cert))      # verified
        requests.get(emu.api_base + "/v2/products", verify=str(files.other_ca))     # SSLError
    with run_emulator(ssl_certfile=files.other_host_cert, ssl_keyfile=files.other_host_key, ca_bundle=files.ca_cert):
        ...  # every client that checks host names refuses https://127.0.0.1:<port>

Keys are ECDSA P-256 (fast to make). Private keys of the servers are written only into that directory, readable by
the owner alone (mode 0600), and never returned or logged; the CA keys are never written anywhere and are gone when
the function returns, so nothing else can ever be signed by these CAs. Certificates are valid from an hour ago (clock
skew) for ``valid_days`` (default 1).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The only name :attr:`TlsFiles.other_host_cert` is valid for (``.invalid`` never resolves, RFC 2606).
OTHER_HOST = "other-host.invalid"
LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the files :func:`write_tls_files` wrote (no key material in the object itself)."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_host_cert: Path
    other_host_key: Path
    other_ca: Path
    other_host: str = OTHER_HOST


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "truconnect-emulator tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca(
    common_name: str, start: datetime.datetime, end: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    names: tuple[str, ...],
    ips: tuple[str, ...],
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    start: datetime.datetime,
    end: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    public = key.public_key()
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created 0600 from the start: the key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_tls_files(directory: str | os.PathLike[str], *, valid_days: int = 1) -> TlsFiles:
    """Write a throw-away CA, server certificates and keys, and an unrelated CA into ``directory``.

    :param directory: an existing directory the caller owns and removes (e.g. pytest's ``tmp_path``).
    :param valid_days: how long the certificates stay valid.
    :return: the paths written.
    :raises ValueError: when ``valid_days`` is not a positive integer.
    :raises FileNotFoundError: when ``directory`` does not exist.
    """
    if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1:
        raise ValueError("valid_days must be a positive integer")
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a directory: {folder}")
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=valid_days)
    ca, ca_key = _ca("truconnect-emulator test CA", start, end)
    other_ca, _ = _ca("truconnect-emulator unrelated CA", start, end)
    server, server_key = _leaf(LOCAL_NAMES, LOCAL_IPS, ca, ca_key, start, end)
    other, other_key = _leaf((OTHER_HOST,), (), ca, ca_key, start, end)
    files = TlsFiles(
        directory=folder,
        ca_cert=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        other_host_cert=folder / "other-host.pem",
        other_host_key=folder / "other-host.key",
        other_ca=folder / "other-ca.pem",
    )
    files.ca_cert.write_bytes(_pem(ca))
    files.server_cert.write_bytes(_pem(server, ca))
    files.other_host_cert.write_bytes(_pem(other, ca))
    files.other_ca.write_bytes(_pem(other_ca))
    _write_key(files.server_key, server_key)
    _write_key(files.other_host_key, other_key)
    return files
