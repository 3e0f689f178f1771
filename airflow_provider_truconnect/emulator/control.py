"""The control plane at ``/__emulator`` (emulator-only, no auth): stats, reset, clock, config, faults, pauses, idle,
tokens, orders, data use and SIM status. :class:`~airflow_provider_truconnect.emulator.server.EmulatorControl` is its
client.

Calls that wait (a reset drains the requests of the previous generation; ``pauses/wait`` and ``idle`` wait for
requests) run in a worker thread, so the event loop goes on serving the very requests they wait for.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_provider_truconnect.emulator.clock import iso
from airflow_provider_truconnect.emulator.lifecycle import use_data
from airflow_provider_truconnect.emulator.render import json_response
from airflow_provider_truconnect.emulator.state import EmulatorState

_Endpoint = Callable[[Request], Awaitable[Response]]


async def _read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def _guarded(fn: _Endpoint) -> _Endpoint:
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except KeyError as exc:
            return JSONResponse({"error": f"not found: {exc}"}, 404)

    return wrapper


def control_app(state: EmulatorState) -> Starlette:
    """:param state: the state to control. :return: the control-plane application (mounted at ``/__emulator``)."""

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "now": state.now()})

    async def stats(request: Request) -> Response:
        return json_response(state.stats())

    async def reset(request: Request) -> Response:
        await run_in_threadpool(state.reset)
        return JSONResponse({"ok": True})

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            data = await _read_json(request)
            with state.lock:
                if "set" in data:
                    state.clock.set(float(data["set"]))
                if "advance" in data:
                    state.clock.advance(float(data["advance"]))
        now = state.now()
        return JSONResponse({"now": now, "iso": iso(now), "offset": state.clock.offset})

    async def config(request: Request) -> Response:
        if request.method == "POST":
            state.update_config(await _read_json(request))
        return JSONResponse(state.config.to_json_dict())

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            return JSONResponse(state.add_fault(await _read_json(request)).to_json(), 201)
        if request.method == "DELETE":
            state.clear_faults()
            return Response(status_code=204)
        with state.lock:
            return JSONResponse([f.to_json() for f in state.faults])

    async def pauses(request: Request) -> Response:
        if request.method == "DELETE":
            return JSONResponse({"released": state.inflight.release()})
        data = await _read_json(request)
        state.inflight.add_pause(**data)
        return JSONResponse(data, 201)

    async def pauses_wait(request: Request) -> Response:
        data = await _read_json(request)
        count, timeout = int(data.get("count", 1)), float(data.get("timeout", 10.0))
        return JSONResponse({"paused": await run_in_threadpool(state.inflight.wait_paused, count, timeout)})

    async def idle(request: Request) -> Response:
        timeout = float((await _read_json(request)).get("timeout", 10.0))
        return JSONResponse({"idle": await run_in_threadpool(state.inflight.wait_idle, timeout)})

    async def revoke(request: Request) -> Response:
        token = (await _read_json(request)).get("token")
        return JSONResponse({"revoked": state.token_server.revoke(token if isinstance(token, str) else None)})

    async def tokens(request: Request) -> Response:
        with state.lock:
            return JSONResponse({"tokens": list(state.issued_tokens)})

    async def orders(request: Request) -> Response:
        return json_response({"orders": state.order_engine.view()})

    async def usage(request: Request) -> Response:
        data = await _read_json(request)
        used = data.get("bytes")
        if isinstance(used, bool) or not isinstance(used, int):
            raise ValueError("bytes must be an integer")
        return JSONResponse(use_data(state.store, str(data["iccid"]), used))

    async def sim_status(request: Request) -> Response:
        data = await _read_json(request)
        sim = state.store.set_sim_status(request.path_params["iccid"], str(data.get("status")))
        return JSONResponse({"iccid": sim.iccid, "status": sim.status})

    routes = [
        ("/health", health, ["GET"]),
        ("/stats", stats, ["GET"]),
        ("/reset", reset, ["POST"]),
        ("/clock", clock, ["GET", "POST"]),
        ("/config", config, ["GET", "POST"]),
        ("/faults", faults, ["GET", "POST", "DELETE"]),
        ("/pauses", pauses, ["POST", "DELETE"]),
        ("/pauses/wait", pauses_wait, ["POST"]),
        ("/idle", idle, ["POST"]),
        ("/revoke", revoke, ["POST"]),
        ("/tokens", tokens, ["GET"]),
        ("/orders", orders, ["GET"]),
        ("/usage", usage, ["POST"]),
        ("/sims/{iccid}/status", sim_status, ["POST"]),
    ]
    return Starlette(routes=[Route(path, _guarded(fn), methods=methods) for path, fn, methods in routes])
