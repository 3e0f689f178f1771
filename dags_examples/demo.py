"""``make demo``: run the example DAGs end to end against the bundled Connect API emulator.

What it does, with nothing but the repository's virtual environment:

1. starts the emulator in a subprocess on a free loopback port;
2. prepares a throw-away ``AIRFLOW_HOME`` (SQLite, example DAGs of Airflow itself off, a DAGs folder holding
   ``dags_examples/example_truconnect_*.py``, the connection in ``AIRFLOW_CONN_TRUCONNECT_DEFAULT``);
3. in **one** child Python process: migrates the database, then runs each example DAG once with ``dag.test()``
   (deferred tasks run their trigger in-process). One process means Airflow is imported once, which is most of the
   cost of ``airflow dags test``;
4. prints each DAG's result, the report's first rows (copied to ``demo-output/``), the start of the eSIM's LPA string
   and QR URL (secrets, never printed whole), the top-ups placed, and how many OAuth2 tokens were requested for how
   many API calls.

Everything it starts is stopped on exit, Ctrl-C included. The exit status is non-zero when any run failed.
Airflow's own log output goes to ``demo-output/airflow-demo.log``.

The child half (``--child``) is also what ``tests/dags`` drives, against an emulator of its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = Path(__file__).resolve().parent
OUTPUT_DIR = REPO_ROOT / "demo-output"
DAG_FILE_GLOB = "example_truconnect_*.py"
PYCACHE_DIR = Path(tempfile.gettempdir()) / f"truconnect-demo-pycache-{os.getuid()}"

#: The DAGs run by the demo, in order, with the run configuration each gets.
DEMO_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("truconnect_usage_report", {}),
    (
        "truconnect_esim_provisioning",
        {
            "email": "ana.silva@example.com",
            "first_name": "Ana",
            "last_name": "Silva",
            "country_of_residence": "PT",
            "device": {"operating_system": "ios", "model": "iPhone 15", "id": "demo-0001"},
        },
    ),
    ("truconnect_low_balance_topup", {"threshold_percent": 25, "max_topups": 3}),
)

#: Emulator timings for the demo: orders complete in about a second instead of three.
DEMO_EMULATOR: dict[str, Any] = {"order_fulfilling_after": 0.3, "order_complete_after": 0.8}
#: How often the demo's deferred order tasks poll (the DAGs themselves use production-like intervals).
DEMO_POLL_INTERVAL = 0.5
CHILD_TIMEOUT = 600.0


# ------------------------------------------------------------------------------------------------ environment
def prepare_airflow_home(home: Path, connection_json: str, report_dir: Path | None = None) -> dict[str, str]:
    """Create a throw-away Airflow home and return the environment for processes that use it.

    :param home: an empty directory.
    :param connection_json: the ``AIRFLOW_CONN_TRUCONNECT_DEFAULT`` value.
    :param report_dir: where the usage report goes (default ``<home>/reports``).
    :return: a copy of ``os.environ`` with the Airflow settings.
    """
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    for path in sorted(EXAMPLES_DIR.glob(DAG_FILE_GLOB)):
        shutil.copy2(path, dags / path.name)
    env = dict(os.environ)
    # The Makefile sets PYTHONDONTWRITEBYTECODE and the venv holds no .pyc files, so every Airflow process would
    # compile ~1,000 modules from source (several seconds on 2 cores). Cache bytecode outside the tree instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE_DIR))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_TRUCONNECT_DEFAULT": connection_json,
            "TRUCONNECT_DEMO_REPORT_DIR": str(report_dir or home / "reports"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_child(env: Mapping[str, str], results: Path, log_path: Path, timeout: float = CHILD_TIMEOUT) -> int:
    """Run the DAGs in a child process (``--child``), its output going to ``log_path``.

    :param env: environment from :func:`prepare_airflow_home`.
    :param results: where the child writes its JSON results.
    :param log_path: the child's stdout and stderr.
    :param timeout: seconds before the child is killed.
    :return: the child's exit code.
    """
    from airflow_provider_truconnect.emulator.server import stop_process

    cmd = [sys.executable, "-m", "dags_examples.demo", "--child", str(results)]
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
        try:
            return proc.wait(timeout=timeout)
        finally:
            stop_process(proc)


# ------------------------------------------------------------------------------------------------ child half
def _tune_for_demo(dag: Any, poll_interval: float) -> None:
    """Fail fast and poll often: the demo runs each DAG once, so retries would only hide the first error."""
    for task in dag.tasks:
        partial_kwargs = getattr(task, "partial_kwargs", None)
        if isinstance(partial_kwargs, dict):  # a mapped operator keeps its arguments here
            partial_kwargs["retries"] = 0
            if "poll_interval" in partial_kwargs:
                partial_kwargs["poll_interval"] = poll_interval
            continue
        task.retries = 0
        if hasattr(task, "poll_interval"):
            task.poll_interval = poll_interval


def _collect(dag_id: str, run_id: str) -> dict[str, Any]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        states = {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in tis}
        xcoms = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == "return_value"
            )
        ).all()
        values: dict[str, Any] = {}
        for x in xcoms:
            key = x.task_id if x.map_index < 0 else f"{x.task_id}[{x.map_index}]"
            values[key] = XComModel.deserialize_value(x)
    return {"task_states": states, "returns": values}


def dag_bag(dag_folder: str | Path) -> Any:
    """Parse a DAGs folder (or one file) with Airflow's ``DagBag``, wherever this Airflow version keeps it.

    :param dag_folder: the folder or file to parse.
    :return: the filled ``DagBag``.
    """
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=str(dag_folder))


def child_main(results_path: Path, runs: Sequence[tuple[str, dict[str, Any]]] = DEMO_RUNS) -> int:
    """Migrate the database and run each DAG with ``dag.test()``; write ``{dag_id: result}`` as JSON.

    Must run in a process whose environment came from :func:`prepare_airflow_home`.

    :param results_path: where to write the results.
    :param runs: ``(dag_id, conf)`` pairs; ``TRUCONNECT_DEMO_RUNS`` (JSON) overrides them.
    :return: 0 when every run succeeded, 1 otherwise.
    """
    poll_interval = float(os.environ.get("TRUCONNECT_DEMO_POLL_INTERVAL", DEMO_POLL_INTERVAL))
    report_dir = os.environ.get("TRUCONNECT_DEMO_REPORT_DIR")
    if os.environ.get("TRUCONNECT_DEMO_RUNS"):
        runs = [(dag_id, conf) for dag_id, conf in json.loads(os.environ["TRUCONNECT_DEMO_RUNS"])]
    results: dict[str, Any] = {}
    t0 = time.monotonic()
    from airflow.utils import db

    db.upgradedb()  # what `airflow db migrate` runs, without a second interpreter start
    results["_timings"] = {"migrate_s": round(time.monotonic() - t0, 1)}

    t1 = time.monotonic()
    bag = dag_bag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    results["_timings"]["parse_s"] = round(time.monotonic() - t1, 1)
    results["_import_errors"] = {str(k): str(v) for k, v in bag.import_errors.items()}
    failed = bool(bag.import_errors)
    for dag_id, conf in runs:
        started = time.monotonic()
        entry: dict[str, Any] = {"conf": conf}
        try:
            dag = bag.dags[dag_id]
            _tune_for_demo(dag, poll_interval)
            run_conf = dict(conf)
            if dag_id == "truconnect_usage_report" and report_dir and "report_dir" not in run_conf:
                run_conf["report_dir"] = report_dir
            dr = dag.test(run_conf=run_conf)
            entry["state"] = str(dr.state)
            entry.update(_collect(dag_id, dr.run_id))
        except Exception as exc:  # report and carry on with the next DAG
            entry["state"] = "error"
            entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["seconds"] = round(time.monotonic() - started, 1)
        failed = failed or entry["state"] != "success"
        results[dag_id] = entry
        results_path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    results_path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ parent half
def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


def _cut(secret: Any, keep: int = 22) -> str:
    text = str(secret or "")
    return text[:keep] + "…" if len(text) > keep else "…"


def _print_report(summary: Mapping[str, Any], copied: Path | None, rows: int = 6) -> None:
    print(f"  report:        {summary['rows']} rows covering {summary['subscriptions']} subscriptions")
    print(f"  data used:     {_gib(summary['used_bytes'])}   data left: {_gib(summary['remaining_bytes'])}")
    print(f"  written to:    {summary['path']}")
    if copied is None:
        return
    print(f"  copied to:     {copied}")
    with open(copied, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        table = [next(reader, [])] + [r for _, r in zip(range(rows), reader, strict=False)]
    cols = [0, 1, 2, 3, 5, 6]  # product_id is long; keep the name, status, counts and bytes
    widths = [max(len(_cell(r, c)) for r in table) for c in cols]
    for r in table:
        print("    " + "  ".join(_cell(r, c).ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("    ...")


def _cell(row: Sequence[str], col: int) -> str:
    value = row[col] if col < len(row) else ""
    return value[:14] + "…" if col == 0 and len(value) > 15 else value


def _print_results(results: Mapping[str, Any], stats: Mapping[str, Any] | None, output_dir: Path = OUTPUT_DIR) -> None:
    for dag_id, _ in DEMO_RUNS:
        entry = results.get(dag_id)
        print()
        if entry is None:
            print(f"== {dag_id}: not run")
            continue
        print(f"== {dag_id}: {entry['state']} in {entry.get('seconds', '?')} s")
        if entry.get("error"):
            print(f"  error: {entry['error']}")
        bad = {t: s for t, s in entry.get("task_states", {}).items() if s not in ("success", "skipped")}
        if bad:
            print(f"  tasks not successful: {bad}")
        returns = entry.get("returns", {})
        if dag_id == "truconnect_usage_report" and "write_report" in returns:
            summary = returns["write_report"]
            copied = None
            if Path(summary["path"]).exists():
                output_dir.mkdir(parents=True, exist_ok=True)
                copied = output_dir / Path(summary["path"]).name
                shutil.copy2(summary["path"], copied)
            _print_report(summary, copied)
        elif dag_id == "truconnect_esim_provisioning" and "activation_details" in returns:
            details = returns["activation_details"]
            print(f"  order:         {details['order_id']}")
            print(f"  ICCID:         {details['iccid']} (profile {details['sim_status']})")
            # Activation codes are secrets (they install the paid eSIM): shown cut short, even from the emulator.
            print(f"  LPA string:    {_cut(details['lpa'])}  (in the XCom of activation_details)")
            print(f"  QR code URL:   {_cut(details['qr_code_url'])}")
        elif dag_id == "truconnect_low_balance_topup" and "summarize" in returns:
            summary = returns["summarize"]
            print(
                f"  low-balance SIMs: {summary.get('low_sims')}   top-ups placed: {summary['placed']} "
                f"(max_topups={entry['conf'].get('max_topups')}; pSIMs and unavailable SIMs are skipped)"
            )
            for order in summary["orders"]:
                print(f"    SIM {order['iccid']}  order {order['order_id']}  {order['status']}")
    if results.get("_import_errors"):
        print(f"\nImport errors: {results['_import_errors']}")
    if stats is not None:
        grants = stats.get("token_grants_total", {})
        api_calls = sum(
            n
            for route, by_status in stats.get("requests_by_route", {}).items()
            if "token" not in route
            for n in by_status.values()
        )
        print()
        print(
            f"== OAuth2: {sum(grants.values())} token(s) requested {dict(grants)} for {api_calls} API calls "
            f"({stats.get('unauthorized', 0)} x 401, {stats.get('rate_limited', 0)} x 429)"
        )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks stop the emulator and the child."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dags_examples.demo``.

    :param argv: command-line arguments.
    :return: the exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m dags_examples.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="RESULTS_JSON", help=argparse.SUPPRESS)
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary AIRFLOW_HOME for inspection")
    args = parser.parse_args(argv)
    if args.child:
        return child_main(Path(args.child))

    from airflow_provider_truconnect.emulator.server import run_emulator

    started = time.monotonic()
    OUTPUT_DIR.mkdir(exist_ok=True)
    log_path = OUTPUT_DIR / "airflow-demo.log"
    home = Path(tempfile.mkdtemp(prefix="truconnect-demo-"))
    code = 1
    try:
        with _sigterm_as_interrupt(), run_emulator(mode="subprocess", **DEMO_EMULATOR) as emu:
            print(f"Emulator:      {emu.api_base} (client {emu.client_id})")
            print(f"AIRFLOW_HOME:  {home}  (Airflow log: {log_path.relative_to(REPO_ROOT)})")
            print("Running: db migrate, then dag.test() for " + ", ".join(d for d, _ in DEMO_RUNS) + " ...", flush=True)
            env = prepare_airflow_home(home, emu.connection_json())
            results_path = home / "results.json"
            child_code = run_child(env, results_path, log_path)
            results = json.loads(results_path.read_text()) if results_path.exists() else {}
            stats = emu.control.stats()
            _print_results(results, stats)
            timings = results.get("_timings", {})
            code = 0 if child_code == 0 and results else 1
            if code != 0 and log_path.exists():
                tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
                print("\nLast lines of the Airflow log:\n" + "\n".join("  " + line for line in tail))
            print(
                f"\nDone in {time.monotonic() - started:.1f} s (db migrate {timings.get('migrate_s', '?')} s, "
                f"DAG parsing {timings.get('parse_s', '?')} s). "
                + ("All runs succeeded." if code == 0 else f"FAILED (child exit {child_code}); see {log_path}")
            )
    except KeyboardInterrupt:
        print("\nInterrupted; stopped the emulator and Airflow.", file=sys.stderr)
        code = 130
    finally:
        if args.keep_home:
            print(f"Kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
