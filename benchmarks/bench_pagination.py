"""Benchmark 3: paginating 100,000 subscriptions — streaming vs collecting into a list, time and memory."""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

from benchmarks.common import BenchResult, emulator, fmt, median, progress, slim_stats, truconnect_hook


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak_rss() -> bool:
    """Reset VmHWM (Linux >= 4.0: writing 5 to clear_refs), so a peak can be measured per pass."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _consume(hook: Any, page_size: int, mode: str) -> int:
    iterator = hook.paginate("/v2/subscriptions", page_size=page_size)
    if mode == "stream":
        count = 0
        for _ in iterator:
            count += 1
        return count
    items = list(iterator)
    count = len(items)
    del items
    return count


def _timed_pass(hook: Any, page_size: int, mode: str) -> dict[str, Any]:
    gc.collect()
    reset_ok = _reset_peak_rss()
    before = _rss_kib("VmRSS")
    started = time.perf_counter()
    count = _consume(hook, page_size, mode)
    wall = time.perf_counter() - started
    peak = _rss_kib("VmHWM")
    return {
        "items": count,
        "wall_s": wall,
        "rss_before_kib": before,
        "rss_peak_kib": peak,
        "rss_peak_delta_mib": (peak - before) / 1024 if reset_ok else float("nan"),
    }


def _traced_pass(hook: Any, page_size: int, mode: str) -> dict[str, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        count = _consume(hook, page_size, mode)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"items": count, "tracemalloc_peak_mib": peak / 2**20}


def run(quick: bool) -> BenchResult:
    seed, page_sizes, reps = (2_000, (100, 1000), 1) if quick else (100_000, (100, 1000), 1)
    results: dict[str, dict[str, Any]] = {}
    with emulator(seed_subscriptions=seed, max_page_size=1000) as emu:
        hook = truconnect_hook(emu, "truconnect_bench_pages")
        next(iter(hook.paginate("/v2/subscriptions", page_size=1, max_pages=1)))  # token + pool, not measured
        for page_size in page_sizes:
            for mode in ("stream", "collect"):
                timed = [_timed_pass(hook, page_size, mode) for _ in range(reps)]
                traced = _traced_pass(hook, page_size, mode)
                key = f"{page_size}/{mode}"
                results[key] = {
                    "page_size": page_size,
                    "mode": mode,
                    "items": timed[0]["items"],
                    "wall_s": median([t["wall_s"] for t in timed]),
                    "rss_peak_delta_mib": median([t["rss_peak_delta_mib"] for t in timed]),
                    "tracemalloc_peak_mib": traced["tracemalloc_peak_mib"],
                    "passes": timed,
                }
                r = results[key]
                progress(
                    f"pagination {key}: {r['items']} items in {r['wall_s']:.2f} s, "
                    f"RSS +{r['rss_peak_delta_mib']:.1f} MiB, tracemalloc peak {r['tracemalloc_peak_mib']:.1f} MiB"
                )
        hook.close()
        stats = slim_stats(emu.control.stats())

    rows = []
    for r in results.values():
        rows.append(
            [
                f"{r['page_size']:,}",
                "streaming (iterate and count)" if r["mode"] == "stream" else "collect into a list",
                f"{r['items']:,}",
                fmt(r["wall_s"], 2),
                fmt(r["items"] / r["wall_s"], 0),
                fmt(r["tracemalloc_peak_mib"], 1),
                fmt(r["rss_peak_delta_mib"], 1),
            ]
        )
    big = page_sizes[-1]
    s, c = results[f"{big}/stream"], results[f"{big}/collect"]
    small_s = results[f"{page_sizes[0]}/stream"]
    headline = [
        f"{s['items']:,} subscriptions stream in {s['wall_s']:.1f} s at page size {big} "
        f"({small_s['wall_s']:.1f} s at {page_sizes[0]}) with a {s['tracemalloc_peak_mib']:.1f} MiB Python-heap peak, "
        f"vs {c['tracemalloc_peak_mib']:.0f} MiB when collected into a list."
    ]
    return BenchResult(
        key="pagination",
        title=f"3. Pagination at scale ({seed:,} subscriptions)",
        method=[
            f"Emulator seeded with {seed:,} subscriptions; `hook.paginate('/v2/subscriptions', page_size=N)` "
            "follows `_next` links to the end. Streaming iterates and counts; collecting builds `list(...)`.",
            (f"Wall time: median of {reps} passes without tracing." if reps > 1 else "Wall time: one untraced pass.")
            + " RSS: peak (VmHWM, reset before each pass through "
            "/proc/self/clear_refs) minus RSS before the pass — coarse, as freed arenas are not always returned to "
            "the OS. Python heap: `tracemalloc` peak in one extra traced pass (tracing slows it, so not timed).",
        ],
        columns=[
            "page size",
            "mode",
            "items",
            "wall time (s)",
            "items/s",
            "tracemalloc peak (MiB)",
            "RSS peak delta (MiB)",
        ],
        rows=rows,
        headline=headline,
        raw={"results": results, "emulator_stats": stats},
    )
