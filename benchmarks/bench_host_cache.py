"""Benchmark 6: the host token cache (``oauth_cache=host``) with many short task processes on one machine."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from benchmarks.common import BenchResult, emulator, fmt, grants, median, percentile, progress, total_grants
from benchmarks.host_cache_worker import run_together


def _scenario(
    emu: Any,
    name: str,
    count: int,
    cache_home: Callable[[int], str],
    *,
    oauth_cache: str,
    one_by_one: bool = False,
    preload_crypto: bool = True,
    warm: bool = False,
) -> dict[str, Any]:
    conn = {
        "host": emu.api_base,
        "login": emu.client_id,
        "password": emu.client_secret,
        "extra": {"oauth_url": emu.oauth_url, "oauth_cache": oauth_cache},
    }
    emu.control.reset()
    emu.control.set_config(rate_limit_per_minute=None)
    if warm:  # one process first puts a fresh token in the cache (not counted)
        run_together(1, conn, cache_home)
    before = total_grants(emu.control.stats())
    reports = run_together(count, conn, cache_home, preload_crypto=preload_crypto, one_by_one=one_by_one)
    stats = emu.control.stats()
    wall = [r["ms"] for r in reports]
    cpu = [r["cpu_ms"] for r in reports]
    result = {
        "scenario": name,
        "processes": count,
        "release": "one at a time" if one_by_one else "together",
        "grants": grants(stats),
        "grants_total": total_grants(stats) - before,
        "distinct_tokens": len({r["token"] for r in reports}),
        "token_requests_sent": sum(r["requests"] for r in reports),
        "median_ms": median(wall),
        "p95_ms": percentile(wall, 95),
        "max_ms": max(wall),
        "median_cpu_ms": median(cpu),
        "wall_ms": wall,
        "cpu_ms": cpu,
    }
    progress(
        f"host cache: {name}: {result['grants_total']} grant(s), median {result['median_ms']:.1f} ms "
        f"(CPU {result['median_cpu_ms']:.1f} ms)"
    )
    return result


def run(quick: bool) -> BenchResult:
    herd, sample = (6, 3) if quick else (200, 50)
    workdir = tempfile.mkdtemp(prefix="truconnect-bench-host-cache-")
    shared = f"{workdir}/host"
    try:
        with emulator() as emu:
            results = [
                _scenario(emu, "oauth_cache=process (default)", herd, lambda _: shared, oauth_cache="process"),
                _scenario(emu, "oauth_cache=host, empty cache", herd, lambda _: shared, oauth_cache="host"),
                _scenario(
                    emu, "oauth_cache=host, token in the cache", herd, lambda _: shared, oauth_cache="host", warm=True
                ),
                _scenario(
                    emu,
                    "oauth_cache=host, one cache per process (Kubernetes: a pod is a host)",
                    herd,
                    lambda i: f"{workdir}/pod-{i}",
                    oauth_cache="host",
                ),
                _scenario(
                    emu,
                    "oauth_cache=process, one at a time",
                    sample,
                    lambda _: shared,
                    oauth_cache="process",
                    one_by_one=True,
                ),
                _scenario(
                    emu,
                    "oauth_cache=host, token in the cache, one at a time",
                    sample,
                    lambda _: shared,
                    oauth_cache="host",
                    one_by_one=True,
                    warm=True,
                ),
                _scenario(
                    emu,
                    "oauth_cache=host, token in the cache, one at a time, cryptography not yet imported",
                    sample,
                    lambda _: shared,
                    oauth_cache="host",
                    one_by_one=True,
                    preload_crypto=False,
                    warm=True,
                ),
            ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return build_result(results, herd, sample)


def build_result(results: list[dict[str, Any]], herd: int, sample: int) -> BenchResult:
    """The table and headline of the scenarios, in the order :func:`run` measures them."""
    by_name = {r["scenario"]: r for r in results}
    process_mode, cold, warm, pods, grant_alone, hit_alone, hit_import = results
    rows = [
        [
            r["scenario"],
            f"{r['processes']:,} {r['release']}",
            f"{r['grants_total']:,}",
            r["distinct_tokens"],
            fmt(r["median_ms"], 1),
            fmt(r["p95_ms"], 1),
            fmt(r["median_cpu_ms"], 2),
        ]
        for r in results
    ]
    headline = [
        f"{herd} task processes started together on one machine: {cold['grants_total']} token grant(s) with "
        f"oauth_cache=host (goal 1) vs {process_mode['grants_total']} per process; a cache hit adds "
        f"{hit_alone['median_ms']:.1f} ms median per process (goal < 5 ms; {hit_alone['median_cpu_ms']:.1f} ms CPU) "
        f"against {grant_alone['median_ms']:.1f} ms for a grant from the local emulator; one cache per process "
        f"(Kubernetes pods) saves nothing: {pods['grants_total']} grants."
    ]
    return BenchResult(
        key="host_cache",
        title=f"6. Host token cache ({herd} task processes started together on one machine)",
        method=[
            "Each task process is a fresh Python interpreter (`python -m benchmarks.host_cache_worker`) that builds a "
            "`TruConnectClient` for the emulator (imports done, nothing sent), reports ready, waits for the release, "
            "then calls `client.token()` once and reports its wall and CPU time and whether it sent a token request. "
            "The connection JSON reaches it on stdin, the cache directory through `XDG_CACHE_HOME`.",
            f"*Together*: all {herd} processes are started, and once every one is ready they are released at once "
            "(one write each on their stdin). On this 2-CPU machine their wall times then mostly measure the CPU "
            f"queue of {herd} runnable processes; *one at a time* ({sample} processes released one after the other) "
            "measures the latency of one process without that queue (the machine's other jobs still run), which is "
            "what a cache hit adds to a task.",
            "The workers import cryptography before reporting ready, as an Airflow 3 task process already has (its "
            "task runner uses it); the last row leaves that import to the first cache read, as in a process without "
            "Airflow.",
            "Token grants are counted by the emulator (reset before each scenario). In the scenarios with a token in "
            "the cache, one process first puts a fresh one there (not counted); 'one cache per process' gives each "
            "process its own `XDG_CACHE_HOME`, as every Kubernetes task pod has its own file system.",
        ],
        columns=["scenario", "processes", "token grants", "distinct tokens", "median ms", "p95 ms", "median CPU ms"],
        rows=rows,
        headline=headline,
        notes=[
            "Against the real token endpoint a grant is a TLS round trip over the internet (tens to hundreds of ms), "
            "so what a hit saves per process grows with that latency; the identity provider sees one request per "
            "token lifetime instead of one per task.",
        ],
        raw={"scenarios": by_name, "herd": herd, "sample": sample},
    )
