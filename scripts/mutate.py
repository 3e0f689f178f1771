"""Mutation testing of the rules that guard money and secrets (``make mutate``), with mutmut.

Three areas, each mutated and tested on its own so that a mutant only runs the tests that matter to it:

* ``client``: ``airflow_provider_truconnect/client/`` (token cache, retry predicate, the rule for requests that are not
  safe to repeat, error mapping, TLS trust, activation codes ...), against ``tests/client``, ``tests/reliability`` and
  ``tests/hooks``;
* ``triggers``: ``airflow_provider_truconnect/triggers/``, against ``tests/triggers``;
* ``operators``: the order paths (``TruConnectCreateOrderOperator`` and its helpers in ``operators/truconnect.py``,
  and ``order_waiting.py``), against ``tests/operators`` and ``tests/sensors``.

Nothing is mutated in the repository: each area gets a private copy of the package and the tests under a work
directory outside the tree (``--work``, default ``$TMPDIR/truconnect-mutate-<hash of the repository path>``), with its
own ``[tool.mutmut]`` section, and mutmut writes its ``mutants/`` directory there. Within each mutant's run, mutmut
runs only the tests that reached the mutated function (its stats), stops at the first failure, and kills a run that
takes far longer than those tests took on the clean code (``timeout_multiplier``), so a mutant that makes a test hang
is counted as timed out instead of being waited for.

The score and the surviving mutants (with their diffs) are written to ``test-results/mutation/summary.md`` and
``summary.json``; survivors known to be equivalent or harmless are listed with their reason from
``scripts/mutate_notes.json`` (keyed by mutated function and the mutated line, so the notes survive renumbering).

Run it with the interpreter of ``.venv-mutate`` (which has mutmut), e.g. ``make mutate`` or
``.venv-mutate/bin/python scripts/mutate.py --areas triggers``.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Exit code recorded for an area stopped by --time-limit.
TIME_BOX_EXIT = 124
PACKAGE = "airflow_provider_truconnect"
RESULTS = ROOT / "test-results" / "mutation"
NOTES = ROOT / "scripts" / "mutate_notes.json"
#: Files copied into each area's work directory (the tests import nothing else from the repository).
COPIED = (PACKAGE, "tests", "pyproject.toml")
#: Slow modules left out: the soak test (thousands of requests at random faults, 2 minutes) and the exhaustive answer
#: tests (every status code through every path, 4 minutes; the same rules are asserted one case at a time elsewhere
#: in tests/reliability), and the connection form tests, which test code outside every area.
IGNORED_TESTS = (
    "tests/reliability/test_reliability_soak.py",
    "tests/reliability/test_reliability_answers.py",
    "tests/hooks/test_legacy_form.py",
    "tests/hooks/test_legacy_form_flask.py",
)
#: Tests that check the code of another process (a fresh interpreter importing the package): they cannot see a
#: mutant, and cost seconds each.
DESELECTED_TESTS = ("tests/client/test_client_core.py::test_imports_stay_light",)
#: Modules another engineer is still writing (not committed yet): neither mutated nor their tests run. Override with
#: ``--in-progress`` once they are committed.
IN_PROGRESS = ("client/host_cache.py", "client/async_pool.py")


@dataclass
class Area:
    name: str
    #: Globs of the files to mutate, relative to the repository.
    mutate: list[str]
    #: Test paths to run (mutmut narrows them to the tests that reach each mutant).
    tests: list[str]
    #: Globs of mutant names to test (default: every mutant of the mutated files) ...
    mutants: list[str] = field(default_factory=list)
    #: ... except these.
    exclude_mutants: list[str] = field(default_factory=list)

    def selects(self, mutant: str) -> bool:
        if self.mutants and not any(fnmatch.fnmatchcase(mutant, pattern) for pattern in self.mutants):
            return False
        return not any(fnmatch.fnmatchcase(mutant, pattern) for pattern in self.exclude_mutants)


def areas(in_progress: tuple[str, ...]) -> dict[str, Area]:
    c, ops = f"{PACKAGE}.client", f"{PACKAGE}.operators.truconnect"
    # The functions of client/ that hold the rules guarding money and secrets. The rest of client/ (connection
    # settings, order body validation, error body parsing, token renewal and single flight, resource helpers, the
    # host token cache) is the area "client-rest": about 2,000 more mutants, most of them on the hot path of every
    # test, so several hours on 2 shared cores.
    money = [
        # The rule for requests that are not safe to repeat, and what feeds it.
        f"{c}.core.x_outcome_unknown__mutmut_*",
        f"{c}.core.xǁ_Callǁnote_failure__mutmut_*",
        f"{c}.core.xǁ_ClientCoreǁsettle__mutmut_*",
        f"{c}.core.xǁ_ClientCoreǁprepare__mutmut_*",
        f"{c}.core.xǁ_ClientCoreǁfinish__mutmut_*",
        f"{c}.core.xǁ_ClientCoreǁbefore_sending__mutmut_*",
        f"{c}.core.xǁ_ClientCoreǁbase_headers__mutmut_*",
        f"{c}.core.xǁ_ClientCoreǁattempt_headers__mutmut_*",
        f"{c}.core.x_check_header__mutmut_*",
        f"{c}.paths.x_is_order_creation__mutmut_*",
        f"{c}.errors.xǁTruConnectErrorǁ__init____mutmut_*",
        f"{c}.responses.x_success_body__mutmut_*",
        f"{c}.responses.x_error_for_response__mutmut_*",
        # The retry predicate and its budget.
        f"{c}.retry.*",
        # Each transport's error mapping (what proves a request unsent) and request loop (no re-send after a 401).
        f"{c}.client.x__requests_error__mutmut_*",
        f"{c}.client.x__is_refused__mutmut_*",
        f"{c}.client.xǁTruConnectClientǁrequest__mutmut_*",
        f"{c}.client.xǁTruConnectClientǁ__init____mutmut_*",
        f"{c}.async_client.x__httpx_error__mutmut_*",
        f"{c}.async_client.xǁAsyncTruConnectClientǁrequest__mutmut_*",
        f"{c}.async_client.xǁAsyncTruConnectClientǁ_mask__mutmut_*",
        # The token cache: compare-and-swap, rejected tokens, every new token to the masker.
        f"{c}.token_cache.xǁTokenCacheǁinvalidate__mutmut_*",
        f"{c}.token_cache.xǁTokenCacheǁwas_rejected__mutmut_*",
        f"{c}.token_cache.xǁTokenCacheǁput__mutmut_*",
        f"{c}.token_cache.xǁTokenCacheǁget__mutmut_*",
        f"{c}.auth.xǁTokenManagerǁinvalidate__mutmut_*",
        f"{c}.auth.xǁTokenManagerǁ_store__mutmut_*",
        f"{c}.auth.xǁTokenManagerǁ_astore__mutmut_*",
        # TLS trust, the same-origin rule of pagination links, activation codes.
        f"{c}.tls.x_tls_error__mutmut_*",
        f"{c}.tls.x_resolve_trust__mutmut_*",
        f"{c}.tls.x_parse_verify_ssl__mutmut_*",
        f"{c}.pagination.*",
        f"{c}.models.x_activation_codes__mutmut_*",
        f"{c}.models.x__activation_fields__mutmut_*",
        f"{c}.models.x_order_summary__mutmut_*",
    ]
    client_tests = ["tests/client", "tests/reliability", "tests/hooks"]
    client_files = [f"{PACKAGE}/client/*.py"]
    return {
        "client": Area("client", client_files, client_tests, mutants=money),
        "client-rest": Area("client-rest", client_files, client_tests, exclude_mutants=money),
        "triggers": Area("triggers", [f"{PACKAGE}/triggers/*.py"], ["tests/triggers"]),
        "operators": Area(
            "operators",
            [f"{PACKAGE}/operators/truconnect.py", f"{PACKAGE}/order_waiting.py", f"{PACKAGE}/order_guard.py"],
            ["tests/operators", "tests/sensors"],
            # The order paths only: the order operator and its module-level helpers, the sending record (order
            # guard) and order waiting.
            mutants=[
                f"{ops}.xǁTruConnectCreateOrderOperatorǁ*",
                f"{ops}.x__order_status__mutmut_*",
                f"{ops}.x__final_failure__mutmut_*",
                f"{ops}.x__how_to_check__mutmut_*",
                f"{PACKAGE}.order_guard.*",
                f"{PACKAGE}.order_waiting.*",
            ],
        ),
    }


def work_root(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"truconnect-mutate-{digest}"


def mutmut_section(area: Area, in_progress: tuple[str, ...]) -> str:
    # The tests of a module still being written (tests/<folder>/test_<module>.py) may fail while it is.
    ignored = [*IGNORED_TESTS, *(f"tests/{Path(m).parent}/test_{Path(m).stem}.py" for m in in_progress)]
    pytest_args = ["-p", "no:cacheprovider", "-m", "not e2e and not bench", "-W", "ignore::DeprecationWarning"]
    pytest_args += ["-p", "tests.mutate_fast_first"]
    pytest_args += [f"--ignore={path}" for path in dict.fromkeys(ignored)]
    pytest_args += [f"--deselect={node}" for node in DESELECTED_TESTS]
    config = {
        "source_paths": [PACKAGE],
        "only_mutate": area.mutate,
        "do_not_mutate": [f"{PACKAGE}/{module}" for module in in_progress] + [f"{PACKAGE}/*/__init__.py"],
        "pytest_add_cli_args_test_selection": area.tests,
        "pytest_add_cli_args": pytest_args,
        # A mutant's run may take this many times its tests' clean duration (plus the constant) before it counts as
        # timed out: generous, because the machine is shared and the tests use real sockets.
        "timeout_multiplier": 10.0,
        "timeout_constant": 5.0,
        "use_git_change_detection": False,
        # Workers are forked from a server that has only imported and collected the tests: forked from mutmut's own
        # process, which ran the whole selection once (emulator threads, connection pools), they hung on locks that a
        # thread of the parent held at the fork.
        "process_isolation": "forkserver",
    }
    lines = ["", "[tool.mutmut]"]
    for key, value in config.items():
        lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def prepare(area: Area, work: Path, in_progress: tuple[str, ...]) -> None:
    """A fresh private copy of the package and the tests, with this area's mutmut configuration."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=ignore)
        else:
            shutil.copy2(src, work / name)
    shutil.copy2(ROOT / "scripts" / "mutate_fast_first.py", work / "tests" / "mutate_fast_first.py")
    pyproject = work / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[)[\s\S])*", "\n", pyproject.read_text())
    pyproject.write_text(text + mutmut_section(area, in_progress))


def mutant_names(area: Area, work: Path) -> list[str]:
    """The names of the area's mutants, for an area that excludes some (mutmut itself only selects)."""
    from mutmut.configuration import reset_config
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name

    previous = Path.cwd()
    os.chdir(work)
    try:
        reset_config()
        names: list[str] = []
        for pattern in area.mutate:
            for path in sorted(Path(".").glob(pattern)):
                if path.name == "__init__.py" or str(path.relative_to(PACKAGE)) in IN_PROGRESS:
                    continue
                mutated = mutate_file_contents(str(path), path.read_text())
                names += [get_mutant_name(path, name) for name in mutated.mutant_names]
        return [name for name in names if area.selects(name)]
    finally:
        reset_config()
        os.chdir(previous)


def run_area(area: Area, work: Path, max_children: int, log: Path, limit_s: float | None) -> tuple[int, float]:
    mutmut = Path(sys.executable).with_name("mutmut")
    selected = mutant_names(area, work) if area.exclude_mutants else area.mutants
    cmd = [str(mutmut), "run", "--max-children", str(max_children), *selected]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", AIRFLOW__CORE__LOAD_EXAMPLES="False")
    started = time.monotonic()
    with log.open("w") as out:
        out.write(f"$ {' '.join(cmd[:4])} <{len(cmd) - 4} mutant name patterns>  (in {work})\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            # Time box: mutmut stops on SIGINT after saving every result so far; the rest count as "not checked".
            os.killpg(proc.pid, signal.SIGINT)
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            out.write(f"\n[mutate] stopped after the time limit of {limit_s:.0f} s\n")
            code = TIME_BOX_EXIT
    return code, time.monotonic() - started


def load_notes() -> list[dict[str, str]]:
    if not NOTES.exists():
        return []
    notes: list[dict[str, str]] = json.loads(NOTES.read_text())["survivors"]
    return notes


def note_for(function: str, diff: str, notes: list[dict[str, str]]) -> dict[str, str] | None:
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    for note in notes:
        if not fnmatch.fnmatchcase(function, note["function"]):
            continue
        if any(note["mutated"] in line for line in added):
            return note
    return None


def collect(area: Area, work: Path, notes: list[dict[str, str]]) -> dict[str, Any]:
    """Read mutmut's results for one area (its ``.meta`` files) into counts and a list of survivors with diffs."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.format_utils import mangled_name_from_mutant_name

    previous = Path.cwd()
    os.chdir(work)
    try:
        counts: dict[str, int] = {}
        by_file: dict[str, dict[str, int]] = {}
        survivors: list[dict[str, Any]] = []
        for meta in sorted(Path("mutants").rglob("*.py.meta")):
            source = meta.relative_to("mutants").with_suffix("")
            data = SourceFileMutationData(path=source)
            data.load()
            for name, code in sorted(data.exit_code_by_key.items()):
                if not area.selects(name):
                    continue
                status = status_by_exit_code[code]
                counts[status] = counts.get(status, 0) + 1
                per = by_file.setdefault(str(source), {})
                per[status] = per.get(status, 0) + 1
                if status in ("survived", "no tests", "suspicious"):
                    diff = get_diff_for_mutant(name, path=source)
                    function = mangled_name_from_mutant_name(name).rpartition(".")[2]
                    note = note_for(function, diff, notes)
                    survivors.append(
                        {
                            "mutant": name,
                            "status": status,
                            "file": str(source),
                            "diff": diff,
                            "note": note["reason"] if note else None,
                            "kind": note["kind"] if note else None,
                        }
                    )
    finally:
        os.chdir(previous)
    total = sum(counts.values())
    detected = counts.get("killed", 0) + counts.get("timeout", 0) + counts.get("caught by type check", 0)
    tested = total - counts.get("skipped", 0) - counts.get("not checked", 0)
    return {
        "counts": counts,
        "by_file": by_file,
        "total": total,
        "score": round(100.0 * detected / tested, 1) if tested else None,
        "survivors": survivors,
    }


def source_fingerprint() -> dict[str, str]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", PACKAGE], cwd=ROOT, capture_output=True, text=True
    ).stdout.splitlines()
    digest = hashlib.sha256()
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return {"commit": head, "uncommitted_package_files": str(len(dirty)), "package_sha256": digest.hexdigest()[:16]}


def write_summary(results: dict[str, Any], meta: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps({**meta, "areas": results}, indent=2, ensure_ascii=False) + "\n")
    out = [
        "# Mutation testing: the rules that guard money and secrets",
        "",
        f"mutmut {meta['mutmut']}; summary written {meta['started']} at commit `{meta['source']['commit'][:12]}`. "
        f"Each area was measured on the commit in its row (a private copy of the working tree then). Total duration "
        f"{meta['duration_s'] / 60:.1f} min (`nice -n 19`). Rows `<area>-survivors` test again, with the tests "
        "added since, only the unexplained survivors of the row above.",
        "",
        "| area | commit | mutants | killed | timed out | survived | no tests | not checked | other | score "
        "| duration |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        c = res["counts"]
        other = res["total"] - sum(c.get(k, 0) for k in ("killed", "timeout", "survived", "no tests", "not checked"))
        score = f"{res['score']} %" if res["score"] is not None else "-"
        out.append(
            f"| {name} | `{res.get('source', {}).get('commit', '?')[:9]}` "
            f"| {res['total']} | {c.get('killed', 0)} | {c.get('timeout', 0)} | {c.get('survived', 0)} | "
            f"{c.get('no tests', 0)} | {c.get('not checked', 0)} | {other} | {score} | "
            f"{res['duration_s'] / 60:.1f} min |"
        )
    out += [
        "",
        "Score = (killed + timed out) / mutants tested. *No tests*: no selected test reaches the mutated function.",
    ]
    for name, res in results.items():
        out += ["", f"## {name}", "", f"Exit code of `mutmut run`: {res['exit_code']}. Per file:", ""]
        for path, c in sorted(res["by_file"].items()):
            out.append(f"- `{path}`: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
        explained = [s for s in res["survivors"] if s["note"]]
        open_ = [s for s in res["survivors"] if not s["note"]]
        out += ["", f"### Surviving mutants without an explanation ({len(open_)})", ""]
        for s in open_:
            out += [f"- `{s['mutant']}` ({s['status']})", "", "```diff", s["diff"].strip(), "```", ""]
        out += ["", f"### Surviving mutants left on purpose ({len(explained)})", ""]
        for s in explained:
            out.append(f"- `{s['mutant']}` ({s['kind']}): {s['note']}")
    (RESULTS / "summary.md").write_text("\n".join(out) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--areas", default="client,triggers,operators", help="comma-separated areas to run")
    parser.add_argument("--work", help="work directory (default: under the system temp directory)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument(
        "--in-progress",
        default=",".join(IN_PROGRESS),
        help="modules (relative to the package) still being written: not mutated, their tests not run",
    )
    parser.add_argument("--collect-only", action="store_true", help="only rewrite the summary from the last run")
    parser.add_argument(
        "--time-limit", type=float, help="minutes per area; mutants not tested by then are reported as not checked"
    )
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="test again only the mutants that survived the area's last run (after adding tests), on a fresh copy",
    )
    args = parser.parse_args(argv)
    in_progress = tuple(m for m in args.in_progress.split(",") if m)
    known = areas(in_progress)
    chosen = [a.strip() for a in args.areas.split(",") if a.strip()]
    for name in chosen:  # a survivors re-run of an area, named "<area>-survivors", is read back by --collect-only
        stored = RESULTS / f"{name}.json"
        if name.endswith("-survivors") and name.removesuffix("-survivors") in known and stored.exists():
            base = known[name.removesuffix("-survivors")]
            only = json.loads(stored.read_text())["mutant_filter"]["only"]
            known[name] = Area(name, base.mutate, base.tests, mutants=only)
    unknown = [a for a in chosen if a not in known]
    if unknown:
        parser.error(f"unknown areas {unknown}; choose from {sorted(known)}")
    root = work_root(args.work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    notes = load_notes()
    results: dict[str, Any] = {}
    started = time.time()
    for name in chosen:
        area, work = known[name], root / name
        if args.survivors:
            last = json.loads((RESULTS / f"{name}.json").read_text())
            names = [s["mutant"] for s in last["survivors"] if not s["note"]]
            area = Area(f"{name}-survivors", area.mutate, area.tests, mutants=names)
            name, work = area.name, root / area.name
        if not args.collect_only:
            measured = source_fingerprint()  # what the private copy is made of
            prepare(area, work, in_progress)
            print(f"[mutate] {name}: mutmut run in {work} (log: {RESULTS / (name + '.log')})", flush=True)
            limit = args.time_limit * 60 if args.time_limit else None
            code, duration = run_area(area, work, args.max_children, RESULTS / f"{name}.log", limit)
        else:
            last = json.loads((RESULTS / f"{name}.json").read_text()) if (RESULTS / f"{name}.json").exists() else {}
            code, duration = last.get("exit_code", 0), last.get("duration_s", 0.0)
            measured = last.get("source") or source_fingerprint()
        res = collect(area, work, notes)
        res.update(exit_code=code, duration_s=round(duration, 1), tests=area.tests, mutated=area.mutate)
        res["source"] = measured
        res["mutant_filter"] = {"only": area.mutants, "except": area.exclude_mutants}
        results[name] = res
        # Each area's own file, so that areas run separately (or at the same time) make one summary afterwards
        # (--collect-only --areas ...).
        (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
        c = res["counts"]
        print(
            f"[mutate] {name}: {res['total']} mutants, killed {c.get('killed', 0)}, timed out {c.get('timeout', 0)}, "
            f"survived {c.get('survived', 0)}, no tests {c.get('no tests', 0)}, score {res['score']} %, "
            f"{duration / 60:.1f} min, mutmut exit {code}",
            flush=True,
        )
    from importlib.metadata import version

    meta = {
        "source": source_fingerprint(),
        "mutmut": version("mutmut"),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "duration_s": round(sum(r.get("duration_s", 0.0) for r in results.values()), 1),
        "max_children": args.max_children,
        "in_progress_not_mutated": list(in_progress),
        "ignored_tests": list(IGNORED_TESTS),
    }
    write_summary(results, meta)
    print(f"[mutate] summary: {RESULTS / 'summary.md'}")
    return 0 if all(r["exit_code"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
