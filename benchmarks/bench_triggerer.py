"""Benchmark 4: 500 concurrent deferred order waits in one event loop (the triggerer), vs poke mode slot time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.common import (
    BenchResult,
    emulator,
    env_vars,
    fmt,
    grants,
    median,
    progress,
    route_count,
    slim_stats,
    total_grants,
    truconnect_hook,
)

GET_ORDER = "GET /v2/orders/{order_id}"
#: Illustrative cost of one extra task start on a worker (not measured here); stated wherever it is used.
ASSUMED_TASK_START_S = 2.0


def _order_body(product_id: str, n: int) -> dict[str, Any]:
    return {
        "operation_type": "ACTIVATION",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": product_id},
        "subscriber": {
            "email": f"bench{n}@example.com",
            "first_name": "Bench",
            "last_name": f"User{n}",
            "country_of_residence": "GB",
            "device": {"model": "bench"},
        },
    }


def _trigger_class() -> tuple[Any, str]:
    try:
        from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger
    except ImportError as exc:  # the trigger module is optional while it is being built
        return None, f"{type(exc).__name__}: {exc}"
    return TruConnectOrderTrigger, ""


async def _wait_all_with_triggers(trigger_cls: Any, order_ids: list[str], poll: float, deadline: float) -> list[Any]:
    async def one(order_id: str) -> tuple[float, dict[str, Any]]:
        trigger = trigger_cls(order_id, "truconnect_default", poll, end_time=deadline)
        payload: dict[str, Any] = {}
        async for event in trigger.run():
            payload = event.payload
            break
        return time.perf_counter(), payload

    return list(await asyncio.gather(*(one(o) for o in order_ids)))


async def _wait_all_with_client(emu: Any, order_ids: list[str], poll: float, deadline: float) -> list[Any]:
    """Fallback when the trigger is missing: the same polling loop on one shared AsyncTruConnectClient."""
    from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient
    from airflow_provider_truconnect.client.config import ClientConfig

    config = ClientConfig.from_connection_fields(
        host=emu.api_base, login=emu.client_id, password=emu.client_secret, extra={"oauth_url": emu.oauth_url}
    )
    async with AsyncTruConnectClient(config) as client:

        async def one(order_id: str) -> tuple[float, dict[str, Any]]:
            while True:
                order = await client.get_order(order_id)
                if order.get("status") in ("COMPLETED", "FAILED") or time.time() >= deadline:
                    return time.perf_counter(), {"status": str(order.get("status")).lower()}
                await asyncio.sleep(poll)

        return list(await asyncio.gather(*(one(o) for o in order_ids)))


def run(quick: bool) -> BenchResult:
    from airflow_provider_truconnect.client.auth import TokenCache

    if quick:
        waits, poll, fulfilling, complete = 20, 0.5, 0.5, 1.5
    else:
        waits, poll, fulfilling, complete = 500, 3.0, 8.0, 20.0
    trigger_cls, missing = _trigger_class()
    with emulator(order_fulfilling_after=fulfilling, order_complete_after=complete) as emu:
        # The creator uses its own token cache so that the triggers start with an empty process-wide cache.
        creator = truconnect_hook(emu, "truconnect_bench_orders", token_cache=TokenCache())
        product_id = next(p["id"] for p in creator.list_products(page_size=100) if "ESIM" in p.get("sim_type", []))
        submit: list[float] = []
        order_ids: list[str] = []
        for n in range(waits):
            t0 = time.perf_counter()
            order_ids.append(creator.create_order(_order_body(product_id, n))["id"])
            submit.append(time.perf_counter() - t0)
        resume: list[float] = []
        for order_id in order_ids[: min(50, waits)]:  # what a resumed task does at most: read the order once
            t0 = time.perf_counter()
            creator.get_order(order_id)
            resume.append(time.perf_counter() - t0)
        creator.close()
        progress(f"triggerer: created {waits} orders (median submit {median(submit) * 1000:.1f} ms)")

        before = emu.control.stats()
        deadline = time.time() + 600
        with env_vars(AIRFLOW_CONN_TRUCONNECT_DEFAULT=emu.connection_json()):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if trigger_cls is not None:
                done = asyncio.run(_wait_all_with_triggers(trigger_cls, order_ids, poll, deadline))
            else:
                done = asyncio.run(_wait_all_with_client(emu, order_ids, poll, deadline))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        after = emu.control.stats()

    statuses: dict[str, int] = {}
    for _, payload in done:
        statuses[str(payload.get("status"))] = statuses.get(str(payload.get("status")), 0) + 1
    waits_s = [t - wall0 for t, _ in done]
    polls = route_count(after, GET_ORDER) - route_count(before, GET_ORDER)
    grants_during = {k: v - grants(before).get(k, 0) for k, v in grants(after).items()}
    grants_during = {k: v for k, v in grants_during.items() if v}
    grants_total = total_grants(after) - total_grants(before)
    rpm = polls / (wall / 60)
    submit_total = sum(submit)
    resume_each = median(resume)
    poke_slot_s = submit_total + sum(waits_s)
    deferrable_slot_s = submit_total + resume_each * waits
    # Illustrative only: a resumed task is a second task start (queue, process, DAG parse) that poke mode avoids.
    deferrable_with_start_s = deferrable_slot_s + ASSUMED_TASK_START_S * waits
    headline = [
        f"{waits} concurrent order waits in one event loop: {grants_total} token grant(s), {polls:,} polls "
        f"({rpm:,.0f}/min), {cpu:.1f} s CPU over {wall:.1f} s wall; worker-slot time {deferrable_slot_s:,.0f} s "
        f"deferrable vs {poke_slot_s:,.0f} s in poke mode ({poke_slot_s / deferrable_with_start_s:,.1f}× less even "
        f"counting an assumed {ASSUMED_TASK_START_S:g} s extra task start per resume)."
    ]
    rows = [
        ["concurrent waits (one event loop)", f"{waits:,}"],
        ["waiter", "TruConnectOrderTrigger.run()" if trigger_cls else "AsyncTruConnectClient.get_order loop"],
        ["poll interval / order completes after", f"{poll:g} s / {complete:g} s (FULFILLING after {fulfilling:g} s)"],
        ["events", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))],
        ["token grants during the waits", f"{grants_total} {grants_during or ''}".strip()],
        ["GET /v2/orders/{id} polls", f"{polls:,} ({polls / waits:.1f} per wait)"],
        ["requests per minute", fmt(rpm, 0)],
        ["wall time (s)", fmt(wall, 1)],
        ["CPU time of the loop process (s)", f"{fmt(cpu, 2)} ({cpu / wall * 100:.0f}% of one core)"],
        ["CPU per poll (ms)", fmt(cpu / max(polls, 1) * 1000, 2)],
        ["median / max wait per order (s)", f"{fmt(median(waits_s), 1)} / {fmt(max(waits_s), 1)}"],
        ["worker-slot seconds, poke mode", fmt(poke_slot_s, 0)],
        ["worker-slot seconds, deferrable", fmt(deferrable_slot_s, 1)],
        ["slot-time ratio poke / deferrable", f"{poke_slot_s / deferrable_slot_s:,.0f}×"],
        [
            f"deferrable + one extra task start per wait (assumed {ASSUMED_TASK_START_S:g} s each, illustrative)",
            f"{fmt(deferrable_with_start_s, 0)} slot-s ({poke_slot_s / deferrable_with_start_s:,.1f}× less than poke)",
        ],
    ]
    return BenchResult(
        key="triggerer",
        title=f"4. Triggerer scale ({waits} concurrent deferred order waits)",
        method=[
            f"{waits} ACTIVATION orders created first with the sync hook (sequentially; each `create_order` timed as "
            f"the 'submit' cost). Emulator: orders FULFILLING after {fulfilling:g} s, COMPLETED after {complete:g} s "
            "of emulator (= real) time, no rate limit.",
            (
                f"Then {waits} `TruConnectOrderTrigger(order_id, 'truconnect_default', poll_interval={poll:g}, "
                "end_time=...)` `.run()` generators run concurrently in one `asyncio` event loop, as in a triggerer; "
                "the connection comes from `AIRFLOW_CONN_TRUCONNECT_DEFAULT` and the process-wide token cache starts "
                "empty. Each trigger builds its own hook and `AsyncTruConnectClient` (its own httpx pool)."
                if trigger_cls
                else f"The trigger module could not be imported ({missing}); the waits are `AsyncTruConnectClient."
                "get_order` polling loops on one shared client instead."
            ),
            "CPU time is `time.process_time()` of the benchmark process (the emulator runs in another process).",
            "Worker-slot seconds are computed, not measured on a scheduler: poke mode holds one slot per wait from "
            "submit until the order is seen terminal (submit + observed wait); deferrable mode holds a slot only "
            "for the submit and the resume (the resume counted as one `get_order` call, median "
            f"{resume_each * 1000:.1f} ms). Airflow's own per-task start-up (DAG parse, process start) is not "
            "included: deferrable pays it twice per wait (start + resume) and poke once, so add 1 × "
            "(task start-up) per wait to the deferrable figure for a fuller picture.",
        ],
        columns=["measure", "value"],
        rows=rows,
        headline=headline,
        raw={
            "waits": waits,
            "poll_interval": poll,
            "order_complete_after": complete,
            "trigger": bool(trigger_cls),
            "trigger_import_error": missing,
            "statuses": statuses,
            "wait_seconds": waits_s,
            "submit_seconds": submit,
            "resume_seconds": resume,
            "polls": polls,
            "requests_per_minute": rpm,
            "cpu_s": cpu,
            "wall_s": wall,
            "grants_during": grants_during,
            "poke_slot_s": poke_slot_s,
            "deferrable_slot_s": deferrable_slot_s,
            "deferrable_with_assumed_task_start_s": deferrable_with_start_s,
            "assumed_task_start_s": ASSUMED_TASK_START_S,
            "polls_per_wait": polls / waits,
            "emulator_stats_before": slim_stats(before),
            "emulator_stats_after": slim_stats(after),
        },
    )
