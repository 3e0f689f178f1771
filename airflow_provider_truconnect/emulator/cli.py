"""``truconnect-emulator``: run the Connect API emulator from the command line.

Prints the base URLs and, on one line, the Airflow connection JSON for ``AIRFLOW_CONN_TRUCONNECT_DEFAULT``.
``--ssl-certfile``/``--ssl-keyfile`` serve HTTPS (and the URLs say ``https``). SIGINT and SIGTERM stop it cleanly
(exit code 0).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from airflow_provider_truconnect.emulator.config import EmulatorConfig

if TYPE_CHECKING:
    from airflow_provider_truconnect.emulator.state import EmulatorState


def build_parser() -> argparse.ArgumentParser:
    """:return: the argument parser."""
    parser = argparse.ArgumentParser(
        prog="truconnect-emulator",
        description="Local emulator of the Truphone/1GLOBAL Connect API v2 and its token server.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    parser.add_argument("--seed", type=int, help="seed of the generated data (default 42)")
    parser.add_argument("--seed-subscriptions", type=int, help="subscriptions seeded for the default client (200)")
    parser.add_argument("--order-fulfilling-after", type=float, help="seconds until an order is FULFILLING (1)")
    parser.add_argument("--order-complete-after", type=float, help="seconds until an order is COMPLETED/FAILED (3)")
    parser.add_argument("--access-token-lifetime", type=int, help="access token lifetime in seconds (300)")
    parser.add_argument("--refresh-token-lifetime", type=int, help="refresh token lifetime in seconds (1800)")
    parser.add_argument("--reported-expires-in", type=int, help="lie about expires_in in token responses")
    parser.add_argument("--no-refresh-tokens", action="store_true", help="do not issue refresh tokens")
    parser.add_argument("--rate-limit", type=int, help="requests per client and route per minute (1000); 0 disables")
    parser.add_argument("--no-retry-after", action="store_true", help="do not send Retry-After on 429")
    parser.add_argument("--strict-correlation-id", action="store_true", help="400 without X-Correlation-ID")
    parser.add_argument("--error-model", choices=["classic", "rfc7807"], help="API error body model (classic)")
    parser.add_argument("--order-created-status", type=int, help="status of POST /v2/orders (201)")
    parser.add_argument("--creation-links-key", choices=["_links", "links"], help="links key of order creation")
    parser.add_argument("--balances-as-strings", action="store_true", help="render balances as strings")
    parser.add_argument("--daily-esim-cap", type=int, help="activations per client per day before 406")
    parser.add_argument("--monthly-esim-cap", type=int, help="activations per client per month before 406")
    parser.add_argument("--api-prefix", help="API path prefix (/connect-api)")
    parser.add_argument("--client", action="append", default=[], metavar="ID:SECRET", help="add a client (repeatable)")
    parser.add_argument(
        "--config-json",
        help="a JSON object of EmulatorConfig fields (applied first; default: $TRUCONNECT_EMULATOR_CONFIG_JSON)",
    )
    parser.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM, server first, then its chain)")
    parser.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (warning)")
    parser.add_argument("--quiet", action="store_true", help="print only the machine-readable URL line")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """:param args: parsed arguments. :return: the configuration they describe."""
    raw = args.config_json or os.environ.get("TRUCONNECT_EMULATOR_CONFIG_JSON")
    updates: dict[str, Any] = json.loads(raw) if raw else {}
    simple = {
        "seed": args.seed,
        "seed_subscriptions": args.seed_subscriptions,
        "order_fulfilling_after": args.order_fulfilling_after,
        "order_complete_after": args.order_complete_after,
        "access_token_lifetime": args.access_token_lifetime,
        "refresh_token_lifetime": args.refresh_token_lifetime,
        "reported_expires_in": args.reported_expires_in,
        "error_model": args.error_model,
        "order_created_status": args.order_created_status,
        "creation_links_key": args.creation_links_key,
        "daily_esim_cap": args.daily_esim_cap,
        "monthly_esim_cap": args.monthly_esim_cap,
        "api_prefix": args.api_prefix,
    }
    updates.update({k: v for k, v in simple.items() if v is not None})
    if args.order_fulfilling_after is None and "order_complete_after" in updates:
        updates.setdefault("order_fulfilling_after", min(1.0, updates["order_complete_after"] / 3))
    if args.no_refresh_tokens:
        updates["issue_refresh_tokens"] = False
    if args.rate_limit is not None:
        updates["rate_limit_per_minute"] = args.rate_limit or None
    if args.no_retry_after:
        updates["retry_after"] = False
    if args.strict_correlation_id:
        updates["strict_correlation_id"] = True
    if args.balances_as_strings:
        updates["balances_as_strings"] = True
    if args.client:
        clients = dict(updates.get("clients") or EmulatorConfig().clients)
        for item in args.client:
            client_id, sep, secret = item.partition(":")
            if not sep or not client_id or not secret:
                raise SystemExit(f"--client expects ID:SECRET, got {client_id or 'an empty id'!r} without a secret")
            clients[client_id] = secret
        updates["clients"] = clients
    return EmulatorConfig.from_json_dict(updates)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM.

    :param argv: arguments (default ``sys.argv[1:]``).
    :return: the exit code.
    """
    args = build_parser().parse_args(argv)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print("truconnect-emulator: HTTPS needs both --ssl-certfile and --ssl-keyfile", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"truconnect-emulator: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from airflow_provider_truconnect.emulator.app import create_app
    from airflow_provider_truconnect.emulator.server import bind_socket, connection_dict
    from airflow_provider_truconnect.emulator.state import EmulatorState

    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"{'https' if args.ssl_certfile else 'http'}://{shown_host}:{port}"
    state = EmulatorState(config)
    api_base = url + config.api_prefix
    oauth_url = url + "/auth/realms/tru-staff/protocol/openid-connect/token"
    conn = connection_dict(api_base, config.default_client, config.client_secret, oauth_url)
    print(f"TRUCONNECT_EMULATOR_URL={url}", flush=True)
    if not args.quiet:
        print(f"API base:       {api_base}")
        print(f"Token URL:      {oauth_url}")
        print(f"Control plane:  {url}/__emulator/stats")
        print("Connection (AIRFLOW_CONN_TRUCONNECT_DEFAULT):")
        print(json.dumps(conn, separators=(",", ":")), flush=True)

    server = _Server(
        uvicorn.Config(
            create_app(state),
            log_level=args.log_level,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            timeout_graceful_shutdown=3,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
        ),
        state,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


class _Server:
    """uvicorn server whose signal handling just stops serving (uvicorn re-raises the signal after shutdown, which
    would turn a clean SIGTERM into exit code -15)."""

    def __init__(self, config: Any, state: EmulatorState) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True
                self.should_exit = True
                # Over TLS an idle keep-alive connection holds a graceful shutdown until its close_notify times out.
                self.force_exit = self.force_exit or self.config.is_ssl
                # Requests that wait (delays, pauses, headers that never end) would hold the shutdown otherwise.
                state.close()

        self._server = Quiet(config)

    def run(self, sockets: list[Any]) -> None:
        self._server.run(sockets=sockets)


if __name__ == "__main__":
    sys.exit(main())
