"""The example DAGs: they parse cleanly without touching the network, and they run end to end against the emulator.

The end-to-end test runs the same child process as ``make demo`` (one process, a throw-away ``AIRFLOW_HOME`` with a
migrated SQLite database, ``dag.test()`` per DAG) against an emulator of its own, once per module, and checks the
results against what the emulator says through its API and control plane.

Everything here imports the example DAGs, which use the Airflow 3 Task SDK, hence ``af3``. Module-level imports stay
Airflow-free so that collection also works on Airflow 2.11.
"""

from __future__ import annotations

import csv
import json
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dags_examples import demo

pytestmark = pytest.mark.af3

EXAMPLES = demo.EXAMPLES_DIR
EXPECTED_DAGS = {"truconnect_usage_report", "truconnect_esim_provisioning", "truconnect_low_balance_topup"}
TOPUP_CONF = {"threshold_percent": 25, "max_topups": 2}
ESIM_CONF = {
    "email": "e2e.subscriber@example.com",
    "first_name": "Eve",
    "last_name": "Tester",
    "country_of_residence": "DE",
    "device": {"operating_system": "android", "model": "Pixel 9", "id": "e2e-1"},
}


# ------------------------------------------------------------------------------------------------ parsing
class _NetworkAtParseTime(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _NetworkAtParseTime(f"network access while parsing: {args[1:]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_example_dags_parse_without_errors_or_network(no_network: None) -> None:
    bag = demo.dag_bag(EXAMPLES)

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXPECTED_DAGS
    # .airflowignore keeps the demo runner and the package marker out of the DAGs folder.
    assert {Path(d.fileloc).name for d in bag.dags.values()} == {p.name for p in EXAMPLES.glob(demo.DAG_FILE_GLOB)}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob(demo.DAG_FILE_GLOB)), ids=lambda p: p.name)
def test_each_example_file_parses_alone(path: Path, no_network: None, record_property: Any) -> None:
    started = time.perf_counter()
    bag = demo.dag_bag(path)
    elapsed = time.perf_counter() - started
    # Recorded, not asserted: timings depend on the machine (team rule: no timing assertions).
    record_property("parse_seconds", round(elapsed, 3))
    print(f"{path.name}: parsed in {elapsed:.3f} s")

    assert bag.import_errors == {}
    assert len(bag.dags) == 1
    dag = next(iter(bag.dags.values()))
    assert {"example", "truconnect"} <= set(dag.tags)
    assert dag.catchup is False
    assert dag.doc_md and dag.doc_md.strip()
    assert dag.default_args.get("retries", 0) >= 1
    text = path.read_text(encoding="utf-8")
    assert f"# [START {dag.dag_id}]" in text and f"# [END {dag.dag_id}]" in text
    assert "from airflow.sdk import" in text


def test_topup_dag_caps_and_validates_max_topups() -> None:
    from airflow.providers.common.compat.sdk import ParamValidationError
    from airflow.sdk import Param

    from dags_examples.example_truconnect_low_balance_topup import truconnect_low_balance_topup

    dag = truconnect_low_balance_topup()
    param = dag.params.get_param("max_topups")
    assert isinstance(param, Param)
    assert param.schema["maximum"] <= 50
    with pytest.raises(ParamValidationError, match="(?i)maximum|less than"):
        param.resolve(1000)
    assert param.resolve(param.schema["maximum"]) == param.schema["maximum"]


# ------------------------------------------------------------------------------------------------ selection rule
def _sub(iccid: str, status: str, initial: Any, current: Any, created: str = "2025-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "sim_id": iccid,
        "status": status,
        "initial_balance": initial,
        "current_balance": current,
        "product_id": f"p-{created}",
        "created_date": created,
    }


def test_find_low_balance_sims_groups_by_sim() -> None:
    from dags_examples.example_truconnect_low_balance_topup import find_low_balance_sims

    gib = 2**30
    subs = [
        _sub("A", "ACTIVE", gib, gib // 100),  # 1 % left: low
        _sub("B", "ACTIVE", gib, gib // 100),  # low, but topped up already: a fresh plan next to it
        _sub("B", "ACTIVE", gib, gib, created="2025-02-01T00:00:00Z"),
        _sub("C", "ACTIVE", str(gib), str(gib // 20)),  # string balances, 5 % left: low
        _sub("D", "ACTIVE", gib, gib // 100),  # low, but a plan is already queued
        _sub("D", "PENDING", gib, gib),
        _sub("E", "DEPLETED", gib, 0),  # terminal: not topped up by this DAG
        _sub("F", "ACTIVE", gib, gib // 2),  # fine
    ]

    low = find_low_balance_sims(subs, threshold_percent=10, min_remaining_bytes=0)

    assert [c["iccid"] for c in low] == ["A", "C"]  # lowest share left first
    assert low[1]["remaining_bytes"] == gib // 20
    by_bytes = find_low_balance_sims(subs, threshold_percent=0, min_remaining_bytes=gib)
    assert [c["iccid"] for c in by_bytes] == ["A", "C", "F"]


# ------------------------------------------------------------------------------------------------ end to end
class _Api:
    """A few plain HTTP calls to the emulator, independent of the provider's client."""

    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.session = requests.Session()
        token = self.session.post(
            emu.oauth_url,
            data={"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": emu.client_secret},
            timeout=10,
        ).json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(self.emu.api_base + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def all_subscriptions(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.get("/v2/subscriptions", page=page, page_size=1000)
            items.extend(body["data"])
            meta = body.get("_metadata", {})
            links = {**meta.get("links", {}), **meta.get("_links", {})}
            if not links.get("_next"):
                return items
            page += 1


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from airflow_provider_truconnect.emulator.server import run_emulator

    # Balances as strings, as some documented examples show them: the DAGs must normalise them.
    with run_emulator(mode="thread", balances_as_strings=True, **demo.DEMO_EMULATOR) as emu:
        api = _Api(emu)
        before_subs = api.all_subscriptions()
        before_stats = emu.control.stats()
        home = tmp_path_factory.mktemp("airflow-home")
        env = demo.prepare_airflow_home(home, emu.connection_json())
        results_path = home / "results.json"
        runs = (
            ("truconnect_usage_report", {}),
            ("truconnect_esim_provisioning", ESIM_CONF),
            ("truconnect_low_balance_topup", TOPUP_CONF),
        )
        env["TRUCONNECT_DEMO_RUNS"] = json.dumps(runs)
        code = demo.run_child(env, results_path, home / "airflow.log")
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        yield {
            "emu": emu,
            "api": api,
            "code": code,
            "results": results,
            "log": home / "airflow.log",
            "before_subs": before_subs,
            "before_stats": before_stats,
            "after_stats": emu.control.stats(),
            "orders": emu.control.orders(),
        }


def _ok(e2e: dict[str, Any], dag_id: str) -> dict[str, Any]:
    entry = e2e["results"].get(dag_id)
    log_tail = e2e["log"].read_text(encoding="utf-8")[-4000:] if e2e["log"].exists() else ""
    assert entry is not None, f"{dag_id} did not run; child exit {e2e['code']}\n{log_tail}"
    assert entry["state"] == "success", f"{dag_id}: {entry}\n{log_tail}"
    assert all(s in ("success", "skipped") for s in entry["task_states"].values()), entry["task_states"]
    return entry


def test_e2e_child_succeeded(e2e: dict[str, Any]) -> None:
    assert e2e["results"].get("_import_errors") == {}
    for dag_id in EXPECTED_DAGS:
        _ok(e2e, dag_id)
    assert e2e["code"] == 0


def test_e2e_usage_report_matches_emulator_data(e2e: dict[str, Any]) -> None:
    from dags_examples.example_truconnect_usage_report import REPORT_COLUMNS

    summary = _ok(e2e, "truconnect_usage_report")["returns"]["write_report"]
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for sub in e2e["before_subs"]:
        initial, current = int(sub["initial_balance"]), int(sub["current_balance"])
        group = expected[(sub["product_id"], sub["status"])]
        group[0] += 1
        group[1] += initial
        group[2] += max(initial - current, 0)
        group[3] += current

    with open(summary["path"], newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == REPORT_COLUMNS
        rows = list(reader)
    got = {
        (r["product_id"], r["status"]): [
            int(r["subscriptions"]),
            int(r["initial_bytes"]),
            int(r["used_bytes"]),
            int(r["remaining_bytes"]),
        ]
        for r in rows
    }
    assert got == dict(expected)
    assert summary["subscriptions"] == len(e2e["before_subs"]) == sum(v[0] for v in expected.values())
    assert summary["rows"] == len(rows)
    assert summary["used_bytes"] == sum(v[2] for v in expected.values())
    assert summary["unreadable"] == 0


def test_e2e_esim_order_placed_and_lpa_returned(e2e: dict[str, Any]) -> None:
    details = _ok(e2e, "truconnect_esim_provisioning")["returns"]["activation_details"]
    activations = [o for o in e2e["orders"] if o["operation_type"] == "ACTIVATION"]

    assert len(activations) == 1
    order = activations[0]
    assert order["status"] == "COMPLETED"
    assert order["request"]["subscriber"]["email"] == ESIM_CONF["email"]
    assert order["request"]["subscriber"]["device"] == ESIM_CONF["device"]
    assert order["request"]["subscriber"]["country_of_residence"] == "DE"
    products = e2e["api"].get("/v2/products", page_size=100)["data"]
    first_esim = next(p for p in products if "ESIM" in p["sim_type"])
    assert order["request"]["product"]["id"] == first_esim["id"]
    assert details["order_id"] == order["id"]
    assert details["iccid"] == order["output"]["iccid"]
    assert details["lpa"] == f"LPA:1$rsp.truphone.com${order['output']['matching_id']}"
    assert details["qr_code_url"].startswith("http") and details["qr_code_url"].endswith(details["lpa"])


def test_e2e_topups_capped_and_placed_for_low_esims(e2e: dict[str, Any]) -> None:
    summary = _ok(e2e, "truconnect_low_balance_topup")["returns"]["summarize"]
    # The rule, restated from the DAG's documentation, over the data the DAG saw.
    active: dict[str, list[dict[str, Any]]] = defaultdict(list)
    queued = set()
    for sub in e2e["before_subs"]:
        if sub["status"] == "ACTIVE":
            active[sub["sim_id"]].append(sub)
        elif sub["status"] in ("PENDING", "PENDING_USAGE"):
            queued.add(sub["sim_id"])
    low = {
        iccid
        for iccid, subs in active.items()
        if iccid not in queued
        and sum(int(s["current_balance"]) for s in subs) * 100
        < TOPUP_CONF["threshold_percent"] * sum(int(s["initial_balance"]) for s in subs)
    }
    eligible = {
        iccid
        for iccid in low
        if (sim := e2e["api"].get(f"/v2/sims/{iccid}"))["sim_type"] == "ESIM" and sim["status"] != "Unavailable"
    }
    assert len(eligible) > TOPUP_CONF["max_topups"], "test data must exercise the cap"

    topups = [o for o in e2e["orders"] if o["operation_type"] == "TOPUP"]
    assert len(topups) == summary["placed"] == min(len(eligible), TOPUP_CONF["max_topups"])
    assert summary["low_sims"] == len(low)
    assert {o["request"]["subscriber"]["sim"]["iccid"] for o in topups} <= eligible
    assert len({o["request"]["subscriber"]["sim"]["iccid"] for o in topups}) == len(topups)
    for order in topups:
        assert order["status"] == "COMPLETED"
        assert order["request"]["sim_type"] == "ESIM"
        assert order["request"]["subscriber"]["device"]
    assert {o["order_id"] for o in summary["orders"]} == {o["id"] for o in topups}


def test_e2e_one_token_for_all_runs_in_one_process(e2e: dict[str, Any]) -> None:
    def grants(stats: dict[str, Any]) -> int:
        return sum(stats["token_grants_total"].values())

    # One child process runs every DAG; the token cache is per process, so one grant serves every API call.
    assert grants(e2e["after_stats"]) - grants(e2e["before_stats"]) == 1
    assert e2e["after_stats"]["requests_total"] - e2e["before_stats"]["requests_total"] > 10
    assert e2e["after_stats"]["unauthorized"] == 0
