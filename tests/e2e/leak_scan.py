"""Find client secrets and issued tokens in logs, broker traffic and database dumps, also where they travel encoded.

Plain text is not enough on the Celery side: kombu puts message bodies into Redis base64-encoded, and PostgreSQL
shows ``bytea`` values (Celery's pickled results) as hex. :func:`decoded_views` turns both back into text, so a
secret inside them is found like any other.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from airflow_provider_truconnect.emulator.server import RunningEmulator

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{24,}={0,2}")
_HEX_BYTEA = re.compile(rb"\\+x([0-9a-fA-F]{32,})")


def leak_needles(emu: RunningEmulator) -> dict[str, str]:
    """:return: what must never appear (label -> value): every client's secret and every token the emulator issued,
    and each token's signature on its own (a log line that cut the token short still leaks it)."""
    needles = {f"client secret of {client}": secret for client, secret in emu.config.clients.items()}
    for i, token in enumerate(emu.control.issued_tokens()):
        needles[f"issued token #{i}"] = token
        signature = token.rsplit(".", 1)[-1]
        if len(signature) >= 16:
            needles[f"signature of issued token #{i}"] = signature
    return needles


def activation_needles(emu: RunningEmulator) -> dict[str, str]:
    """:return: every activation code of every order placed so far (label -> value): secrets like the tokens."""
    from airflow.providers.common.compat.sdk import Connection

    from airflow_provider_truconnect.client.models import activation_codes
    from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

    conn = emu.connection_dict()
    connection = Connection(
        conn_id="e2e_codes",
        conn_type="truconnect",
        host=conn["host"],
        login=conn["login"],
        password=conn["password"],
        extra=json.dumps(conn.get("extra") or {}),
    )
    needles: dict[str, str] = {}
    with TruConnectHook("e2e_codes", connection=connection) as hook:
        for order in emu.control.orders():
            for code in activation_codes(hook.get_order(order["id"])):
                needles[f"activation code of order {order['id']}"] = code
    return needles


def decoded_views(data: bytes) -> Iterator[bytes]:
    """Yield ``data`` itself, then the decoding of every base64 run (kombu message bodies) and hex ``bytea`` literal
    in it that decodes to bytes.

    :param data: raw file content.
    """
    yield data
    for match in _BASE64_RUN.finditer(data):
        run = match.group(0)
        try:
            yield base64.b64decode(run + b"=" * (-len(run) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
    for match in _HEX_BYTEA.finditer(data):
        hexdigits = match.group(1)
        yield bytes.fromhex(hexdigits.decode()[: len(hexdigits) // 2 * 2])


def find_leaks(data: bytes, needles: Mapping[str, str]) -> list[str]:
    """:return: the labels of the needles found in ``data`` or in one of its :func:`decoded_views`."""
    encoded = {label: value.encode() for label, value in needles.items() if value}
    found: dict[str, None] = {}
    for view in decoded_views(data):
        for label, value in encoded.items():
            if label not in found and value in view:
                found[label] = None
    return list(found)


def scan_files(paths: Iterable[Path], needles: Mapping[str, str]) -> tuple[list[str], int]:
    """Scan files for needles.

    :param paths: files to read.
    :param needles: label -> value, from :func:`leak_needles`.
    :return: ``"<file>: <labels>"`` per file with a leak, and the number of bytes scanned.
    """
    leaks: list[str] = []
    scanned = 0
    for path in paths:
        data = path.read_bytes()
        scanned += len(data)
        labels = find_leaks(data, needles)
        if labels:
            leaks.append(f"{path}: {', '.join(labels[:5])}{' ...' if len(labels) > 5 else ''}")
    return leaks, scanned
