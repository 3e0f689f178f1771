"""Smoke test of the benchmark harness: ``--quick`` runs all five benchmarks at tiny sizes and writes the report.

Timings are never asserted: only that every benchmark ran and produced its table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    "## 1. Request overhead",
    "## 2. Token economy",
    "## 3. Pagination at scale",
    "## 4. Triggerer scale",
    "## 5. Import cost",
    "## 6. Host token cache",
)

pytestmark = [pytest.mark.bench, pytest.mark.af3]


def test_quick_run_writes_all_five_tables(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    json_dir = tmp_path / "raw"
    env = dict(os.environ)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(output), "--json-dir", str(json_dir)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = output.read_text(encoding="utf-8")
    assert "Quick mode" in report
    assert "FAILED" not in report
    for section in SECTIONS:
        assert section in report, f"missing section {section!r}"
        table = report.split(section, 1)[1].split("\n## ", 1)[0]
        assert "\n|---" in table, f"section {section!r} has no table"
    for name in ("overhead", "tokens", "pagination", "triggerer", "imports", "host_cache", "summary"):
        data = json.loads((json_dir / f"{name}.json").read_text(encoding="utf-8"))
        assert data["quick"] is True
