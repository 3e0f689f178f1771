"""Provider metadata read by Airflow's provider discovery (entry point ``apache_airflow_provider``).

Kept free of imports beyond the package version: Airflow calls this in every component at start-up, and a failure
here breaks provider discovery for the whole installation.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_truconnect import __version__

CONN_TYPE = "truconnect"
HOOK_NAME = "Truphone Connect"
_INTEGRATION = "Truphone Connect"

#: Connection form: standard fields relabelled for OAuth2 client credentials, unused ones hidden.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {"host": "API base URL", "login": "Client ID", "password": "Client Secret"},
    "placeholders": {
        "host": "https://services.truphone.com/connect-api",
        "login": "client id issued by 1GLOBAL",
        "password": "client secret issued by 1GLOBAL",
        "description": "Truphone / 1GLOBAL Connect API credentials",
    },
}

#: Extra fields, stored under these plain names in ``Connection.extra``. Nullable types keep the React UI from
#: marking them required; none of the names contains a word Airflow redacts (``token``, ``secret`` ...).
CONN_FIELDS: dict[str, Any] = {
    "oauth_url": {
        "label": "Token endpoint URL",
        "description": "OAuth2 token endpoint (Keycloak). Empty: "
        "<API host>/auth/realms/tru-staff/protocol/openid-connect/token",
        "schema": {"type": ["string", "null"], "format": "url"},
    },
    "scope": {
        "label": "Scope",
        "description": "OAuth2 scope to request. Usually empty: the Connect API needs none.",
        "schema": {"type": ["string", "null"]},
    },
    "client_auth": {
        "label": "Client authentication",
        "description": "How the client ID and secret are sent to the token endpoint: in the form body "
        "(client_secret_post, the documented way) or as HTTP Basic (client_secret_basic).",
        "schema": {
            "type": ["string", "null"],
            "enum": ["client_secret_post", "client_secret_basic"],
            "default": "client_secret_post",
        },
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Read timeout of each request. Default 30.",
        "schema": {"type": ["number", "null"], "minimum": 1, "default": 30},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of a failed request that is safe to repeat (never a possibly-placed order). Default 4.",
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 10, "default": 4},
    },
    "verify_ssl": {
        "label": "TLS verification",
        "description": "Empty: the machine's CA variables (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, SSL_CERT_FILE, "
        "SSL_CERT_DIR), else the certifi bundle. A path: that CA bundle file or directory (on every Airflow "
        "component). true: the certifi bundle. false: no verification (test servers only).",
        "schema": {"type": ["string", "null"]},
    },
    "allow_insecure_http": {
        "label": "Allow plain http",
        "description": "Allow http:// (not https) to a host other than this machine. Only for a trusted test server: "
        "credentials and tokens would travel unencrypted.",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
    "oauth_cache": {
        "label": "Token cache",
        "description": "process (default): each task process obtains its own OAuth2 token. host: the task processes of "
        "one user on one machine share it through an encrypted file in ~/.cache (one token request instead of one "
        "per task). Saves nothing where every task runs on its own host, e.g. Kubernetes pods.",
        "schema": {"type": ["string", "null"], "enum": ["process", "host"], "default": "process"},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata dictionary Airflow validates against ``provider_info.schema.json``.

    :return: the provider info; ``package-name`` equals the canonical distribution name.
    """
    return {
        "package-name": "airflow-provider-truconnect",
        "name": "Truphone Connect",
        "description": "Truphone (1GLOBAL) Connect API: order eSIMs, top up plans, watch SIMs and subscriptions.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://docs.connect.1global.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_truconnect.hooks.truconnect"]}
        ],
        "operators": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_truconnect.operators.truconnect"]}
        ],
        "sensors": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_truconnect.sensors.truconnect"]}
        ],
        "triggers": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_truconnect.triggers.truconnect"]}
        ],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_truconnect.hooks.truconnect.TruConnectHook",
                "hook-name": HOOK_NAME,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
