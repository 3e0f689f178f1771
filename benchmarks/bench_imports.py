"""Benchmark 5: import cost of the provider's operators and sensors on top of ``import airflow.sdk``.

Every DAG file that uses the provider pays this at every parse. Each sample is a fresh interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks.common import BenchResult, fmt, median, progress

PACKAGE = "airflow_provider_truconnect"
DAG_MODULES = [f"{PACKAGE}.operators.truconnect", f"{PACKAGE}.sensors.truconnect"]
#: Measured instead when the operator/sensor modules do not exist yet (stated in the report).
FALLBACK_MODULES = [f"{PACKAGE}.hooks.truconnect", f"{PACKAGE}.triggers.truconnect"]
MARK = "@@TRUCONNECT-BENCH-MARK@@"
GOAL_MS = 50.0

_CHILD = r"""
import importlib, json, sys, time
MARK = sys.argv[1]
mods = sys.argv[2:]
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
base = set(sys.modules)
sys.stderr.write(MARK + "\n"); sys.stderr.flush()
steps = []
for name in mods:
    s = time.perf_counter()
    importlib.import_module(name)
    steps.append([name, time.perf_counter() - s])
t2 = time.perf_counter()
new = sorted({m.split(".")[0] for m in set(sys.modules) - base})
print(json.dumps({"airflow_sdk_s": t1 - t0, "provider_s": t2 - t1, "steps": steps, "new_top_level": new}))
"""


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _env(pycache: str, write_bytecode: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPYCACHEPREFIX"] = pycache
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return env


def _sample(modules: list[str], env: dict[str, str], importtime: bool = False) -> tuple[dict[str, Any], str]:
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", _CHILD, MARK, *modules]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"import sample failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _parse_importtime(stderr: str) -> list[tuple[str, str, float, float]]:
    """(parent, module, self_ms, cumulative_ms) for every module imported after the mark (``-X importtime``)."""
    after = stderr.split(MARK, 1)[1] if MARK in stderr else ""
    entries: list[tuple[int, str, float, float]] = []
    for line in after.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name_field = line[len("import time:") :].split("|", 2)
        depth = (len(name_field) - len(name_field.lstrip(" "))) // 2  # " " + two spaces per nesting level
        entries.append((depth, name_field.strip(), int(self_us) / 1000, int(cum_us) / 1000))
    # -X importtime prints children before their parent: a line adopts the preceding lines one level deeper.
    out: list[tuple[str, str, float, float]] = []
    pending: list[tuple[int, str, float, float]] = []
    for depth, name, self_ms, cum_ms in entries:
        while pending and pending[-1][0] > depth:
            child = pending.pop()
            out.append((name, child[1], child[2], child[3]))
        pending.append((depth, name, self_ms, cum_ms))
    out.extend(("<top>", child[1], child[2], child[3]) for child in pending)
    return out


def run(quick: bool) -> BenchResult:
    runs, cold_runs, traced_runs = (1, 0, 1) if quick else (15, 2, 3)
    present = [m for m in DAG_MODULES if _module_exists(m)]
    modules = (
        present if len(present) == len(DAG_MODULES) else present + [m for m in FALLBACK_MODULES if _module_exists(m)]
    )
    missing = [m for m in DAG_MODULES if m not in present]
    out_dir = os.environ.get("TRUCONNECT_BENCH_OUTPUT_DIR") or tempfile.gettempdir()
    warm_cache = os.path.join(out_dir, "pycache")
    warm_env = _env(warm_cache, write_bytecode=True)
    if not quick:
        _sample(modules, warm_env)  # compiles the bytecode cache (and lets Airflow create its home/config)
    warm = [_sample(modules, warm_env)[0] for _ in range(runs)]
    progress(f"imports: warm median {median([w['provider_s'] for w in warm]) * 1000:.1f} ms over {runs} runs")
    cold: list[dict[str, Any]] = []
    for _ in range(cold_runs):
        with tempfile.TemporaryDirectory(prefix="truconnect-bench-nopyc-") as empty:
            cold.append(_sample(modules, _env(empty, write_bytecode=False))[0])
    traces: list[list[tuple[str, str, float, float]]] = []
    for _ in range(traced_runs):
        traces.append(_parse_importtime(_sample(modules, warm_env, importtime=True)[1]))

    # Imports made directly by provider modules, of modules outside the provider: the candidates for lazy imports.
    direct: dict[tuple[str, str], list[float]] = {}
    for trace in traces:
        for parent, child, _, cum in trace:
            if parent.startswith(PACKAGE) and not child.startswith(PACKAGE):
                direct.setdefault((parent, child), []).append(cum)
    heavy = sorted(((median(v), p, c) for (p, c), v in direct.items()), reverse=True)
    provider_self = sorted(
        (
            (median(v), c)
            for c, v in _group([(c, s) for t in traces for (_, c, s, _) in t if c.startswith(PACKAGE)]).items()
        ),
        reverse=True,
    )

    warm_ms = median([w["provider_s"] for w in warm]) * 1000
    sdk_ms = median([w["airflow_sdk_s"] for w in warm]) * 1000
    rows: list[list[Any]] = [
        [
            "warm bytecode cache (a deployed image)",
            runs,
            fmt(sdk_ms, 0),
            fmt(warm_ms, 1),
            f"{min(w['provider_s'] for w in warm) * 1000:,.1f} – {max(w['provider_s'] for w in warm) * 1000:,.1f}",
            "yes" if warm_ms < GOAL_MS else "**no**",
        ]
    ]
    if cold:
        cold_ms = median([c["provider_s"] for c in cold]) * 1000
        rows.append(
            [
                "no bytecode cache (PYTHONDONTWRITEBYTECODE=1, a cold start)",
                cold_runs,
                fmt(median([c["airflow_sdk_s"] for c in cold]) * 1000, 0),
                fmt(cold_ms, 1),
                f"{min(c['provider_s'] for c in cold) * 1000:,.1f} – {max(c['provider_s'] for c in cold) * 1000:,.1f}",
                "yes" if cold_ms < GOAL_MS else "**no**",
            ]
        )
    new_top = sorted({m for w in warm for m in w["new_top_level"]} - {PACKAGE, "airflow"})
    notes = [
        "Top-level packages (other than `airflow.*` submodules) first imported by the provider, i.e. not already "
        "loaded by `airflow.sdk`: " + (", ".join(f"`{m}`" for m in new_top) or "none") + ".",
    ]
    if heavy:
        notes.append(
            "Heaviest imports made directly by provider modules (`-X importtime` cumulative, median of "
            f"{traced_runs} runs; candidates for lazy imports):"
        )
        for cum, parent, child in heavy[:12]:
            if cum < 0.5:
                break
            notes.append(f"  - `{parent}` → `{child}`: {cum:.1f} ms")
    if provider_self:
        notes.append(
            "Provider modules' own execution time (self, excluding their imports): "
            + ", ".join(f"`{m.removeprefix(PACKAGE + '.')}` {t:.1f} ms" for t, m in provider_self[:6])
            + "."
        )
    if missing:
        notes.insert(
            0,
            f"**{', '.join(missing)} did not exist when this ran; measured {', '.join(modules)} instead** "
            "(the operators and sensors will import at least the hook, and the triggers for deferrable mode).",
        )
    headline = [
        f"Importing {' + '.join(m.removeprefix(PACKAGE + '.') for m in modules)} adds {warm_ms:.0f} ms "
        f"(median of {runs} fresh interpreters) on top of `import airflow.sdk` ({sdk_ms:,.0f} ms); goal < "
        f"{GOAL_MS:.0f} ms: {'met' if warm_ms < GOAL_MS else 'NOT met'}."
    ]
    return BenchResult(
        key="imports",
        title="5. Import cost at DAG parse (provider operators and sensors on top of Airflow)",
        method=[
            f"Fresh interpreters (`{os.path.basename(sys.executable)} -c ...`): time `import airflow.sdk`, then "
            f"import {', '.join(f'`{m}`' for m in modules)} and time that (perf_counter in the child). Median of "
            f"{runs} runs after one discarded run that fills the bytecode cache (`PYTHONPYCACHEPREFIX` under "
            "bench-output/)"
            + (f"; plus {cold_runs} runs with no bytecode at all." if cold_runs else ".")
            + " Attribution from `python -X importtime` of the same script.",
        ],
        columns=[
            "bytecode",
            "runs",
            "import airflow.sdk (ms)",
            "provider on top (ms, median)",
            "min – max (ms)",
            f"< {GOAL_MS:.0f} ms",
        ],
        rows=rows,
        headline=headline,
        notes=notes,
        raw={
            "modules": modules,
            "missing": missing,
            "warm": warm,
            "cold": cold,
            "heavy_direct_imports_ms": [[p, c, t] for t, p, c in heavy],
            "provider_self_ms": [[m, t] for t, m in provider_self],
        },
    )


def _group(pairs: list[tuple[str, float]]) -> dict[str, list[float]]:
    grouped: dict[str, list[float]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped
