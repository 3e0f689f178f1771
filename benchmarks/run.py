"""Run the benchmarks and write ``BENCHMARKS.md`` (plus raw JSON in ``bench-output/``).

.. code-block:: console

    python -m benchmarks.run                                   # full run, ~5 minutes; what `make bench` does
    python -m benchmarks.run --quick --output /tmp/bench.md    # tiny sizes: a smoke test, figures meaningless
    python -m benchmarks.run --only overhead,imports           # a subset
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ("overhead", "tokens", "pagination", "triggerer", "imports", "host_cache", "celery")


def _prepare_environment() -> None:
    # Before Airflow is imported: a throw-away home unless one is set, no example DAGs.
    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="truconnect-bench-airflow-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # Pagination/overhead logs would otherwise be masked against every issued token; keep Airflow's defaults.


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gib = float("nan")
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    ram_gib = int(line.split()[1]) / 2**20
                    break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu,
        "ram_gib": round(ram_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "airflow": version("apache-airflow"),
        "apache-airflow-providers-http": version("apache-airflow-providers-http"),
        "requests": version("requests"),
        "httpx": version("httpx"),
        "provider": version("airflow-provider-truconnect"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": _loadavg(),
    }


def _loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _runner(name: str) -> Callable[[bool], Any]:
    from benchmarks import (
        bench_celery,
        bench_host_cache,
        bench_imports,
        bench_overhead,
        bench_pagination,
        bench_tokens,
        bench_triggerer,
    )

    return {
        "overhead": bench_overhead.run,
        "tokens": bench_tokens.run,
        "pagination": bench_pagination.run,
        "triggerer": bench_triggerer.run,
        "imports": bench_imports.run,
        "host_cache": bench_host_cache.run,
        "celery": bench_celery.run,
    }[name]


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(
    info: dict[str, Any], results: list[Any], failures: dict[str, str], quick: bool, total_s: float
) -> str:
    lines = ["# Benchmarks", ""]
    if quick:
        lines += ["> **Quick mode (smoke test): tiny sizes, the figures below mean nothing.**", ""]
    lines += [
        "Written by `make bench` (`python -m benchmarks.run`); raw results in `bench-output/` (not committed). "
        "Every benchmark talks to the bundled Connect API emulator over real loopback sockets; the emulator runs in "
        "its own process (its own GIL), with rate limiting off. Numbers are from one machine, which may be shared "
        "with other work (see the load averages); they are meant for ratios between contenders measured "
        "side by side, not for capacity planning.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPUs (`nproc`) | {info['nproc']} (usable: {info['affinity_cpus']}) |",
        f"| CPU model | {_cell(info['cpu_model'])} |",
        f"| RAM | {info['ram_gib']} GiB |",
        f"| OS | {_cell(info['os'])} |",
        f"| Python | {info['python']} |",
        f"| Airflow | {info['airflow']} (apache-airflow-providers-http {info['apache-airflow-providers-http']}) |",
        f"| requests / httpx | {info['requests']} / {info['httpx']} |",
        f"| provider | airflow-provider-truconnect {info['provider']} |",
        f"| date | {info['date']} |",
        f"| total run time | {total_s:.0f} s |",
        f"| load average (1/5/15 min) at start | {info['loadavg_at_start']} |",
        "",
        "## Headlines",
        "",
    ]
    for result in results:
        lines += [f"- {_cell(h)}" for h in result.headline]
    for name, error in failures.items():
        lines.append(f"- **{name}: FAILED** — {_cell(error.strip().splitlines()[-1] if error.strip() else error)}")
    lines.append("")
    for result in results:
        lines += [f"## {result.title}", "", "**Method.**", ""]
        lines += [f"- {m}" for m in result.method]
        lines += ["", "| " + " | ".join(_cell(c) for c in result.columns) + " |"]
        lines.append("|" + "|".join("---" for _ in result.columns) + "|")
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in result.rows]
        lines.append("")
        if result.notes:
            for note in result.notes:
                lines.append(note if note.startswith("  - ") else f"- {note}")
            lines.append("")
        lines += [
            f"_Took {result.seconds:.0f} s; load average before / after: {result.raw.get('loadavg', 'n/a')}._",
            "",
        ]
    for name, error in failures.items():
        lines += [f"## {name}: failed", "", "```", error.strip()[-3000:], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); figures are meaningless")
    parser.add_argument("--output", default=str(REPO_ROOT / "BENCHMARKS.md"), help="Markdown report path")
    parser.add_argument("--json-dir", default=None, help="raw JSON directory (default: bench-output/ at the repo root)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    args = parser.parse_args(argv)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    json_dir = Path(args.json_dir) if args.json_dir else REPO_ROOT / "bench-output"
    if args.quick and not args.json_dir:
        json_dir = Path(args.output).resolve().parent / "bench-output-quick"
    json_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TRUCONNECT_BENCH_OUTPUT_DIR"] = str(json_dir)

    _prepare_environment()
    from benchmarks.common import configure_logging_as_shipped, dump_json, progress

    configure_logging_as_shipped()
    info = machine_info()
    progress(f"{'quick' if args.quick else 'full'} run of {', '.join(selected)}; machine: {info}")
    results: list[Any] = []
    failures: dict[str, str] = {}
    started = time.perf_counter()
    for name in selected:
        t0 = time.perf_counter()
        load_before = _loadavg()
        progress(f"--- {name} (load average {load_before})")
        try:
            result = _runner(name)(args.quick)
        except Exception:
            failures[name] = traceback.format_exc()
            progress(f"{name} FAILED:\n{failures[name]}")
            continue
        result.seconds = time.perf_counter() - t0
        result.raw["loadavg"] = f"{load_before} → {_loadavg()}"
        results.append(result)
        dump_json(str(json_dir / f"{name}.json"), {"machine": info, "quick": args.quick, **result.to_json()})
        progress(f"{name} done in {result.seconds:.0f} s: {' '.join(result.headline)}")
    total = time.perf_counter() - started
    report = render_markdown(info, results, failures, args.quick, total)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report, encoding="utf-8")
    dump_json(
        str(json_dir / "summary.json"),
        {
            "machine": info,
            "quick": args.quick,
            "total_s": total,
            "failures": failures,
            "headlines": {r.key: r.headline for r in results},
        },
    )
    progress(f"wrote {args.output} and {json_dir}/ in {total:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
