"""Wheel smoke test of ``make dist``: what users install is complete, clean, and works without the source tree.

1. The wheel holds exactly the package files git knows (tracked, or new and not ignored) plus its dist-info with the
   license; the sdist holds exactly the files ``pyproject.toml`` includes. No caches, tests or example DAGs in the
   wheel, ``py.typed`` present. The expected sets come from git, so new modules need no change here.
2. A fresh virtual environment gets the Airflow 3.3 lock file plus the wheel (``--no-deps``, never ``-e .``), and
   ``uv pip check`` proves the lock satisfies the wheel's dependencies.
3. In that environment, from a directory outside the checkout: ``airflow providers list`` / ``providers hooks`` show
   the provider, ``installed_checks.py`` checks metadata, entry points, the connection form in ``ProvidersManager`` and
   parses the example DAGs, ``truconnect-emulator --help`` runs, and a throw-away test uses the pytest plugin's
   fixtures against the installed emulator and hook.

Everything it creates lives in one temporary directory, removed at the end (also on failure).

Usage: ``python scripts/wheel_smoke/run.py [--uv UV] [--python PYTHON] [--lock FILE] [--keep] DIST_DIR``
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PACKAGE = "airflow_provider_truconnect"
DIST_NAME = "airflow-provider-truconnect"
HOOK_CLASS = f"{PACKAGE}.hooks.truconnect.TruConnectHook"
#: Generous per-command limit: a hung command must not eat CI's budget, a slow shared machine must not fail it.
COMMAND_TIMEOUT = 900
#: Never shipped, whatever git says: byte code, tool caches, virtual environments, VCS data.
FORBIDDEN_PARTS = {"__pycache__", ".git", ".venv", ".tools", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
FORBIDDEN_PARTS |= {".hypothesis", "test-results", "dist", "build"}
FORBIDDEN_NAMES = ("*.pyc", "*.pyo", "*.so", ".DS_Store")
#: Test code and examples stay out of the wheel (the sdist carries them).
NOT_IN_WHEEL = ("test_*.py", "*_test.py", "conftest.py")


class SmokeFailure(Exception):
    """A check failed; the message says which and what was found."""


def _fail_unless(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


_STARTED = time.monotonic()


def _step(message: str) -> None:
    print(f"wheel-smoke: [{time.monotonic() - _STARTED:5.1f} s] {message}", flush=True)


def _run(
    argv: Sequence[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise SmokeFailure(
            f"`{' '.join(str(a) for a in argv)}` exited {result.returncode}\n"
            f"--- stdout (tail)\n{result.stdout[-3000:]}\n--- stderr (tail)\n{result.stderr[-3000:]}"
        )
    return result


# ---------------------------------------------------------------------------------------------- expected contents
def source_files(prefixes: Iterable[str]) -> set[str]:
    """Files under ``prefixes`` that a build picks up: tracked or untracked but not ignored, and present on disk.

    :param prefixes: repository-relative files or directories.
    :return: repository-relative POSIX paths.
    """
    result = _run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *prefixes])
    return {p for p in result.stdout.split("\0") if p and (REPO / p).is_file()}


def _pyproject() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def license_files() -> list[str]:
    """:return: the files ``[project] license-files`` names, relative to the repository root."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    patterns = project.get("license-files") or []
    found = sorted({str(p.relative_to(REPO)) for pattern in patterns for p in REPO.glob(pattern) if p.is_file()})
    _fail_unless("LICENSE" in found, f"pyproject.toml license-files must name LICENSE (found {found})")
    return found


def _forbidden(name: str) -> bool:
    parts = name.split("/")
    return bool(FORBIDDEN_PARTS.intersection(parts)) or any(fnmatch.fnmatch(parts[-1], p) for p in FORBIDDEN_NAMES)


def _compare(kind: str, actual: set[str], expected: set[str]) -> None:
    extra, missing = sorted(actual - expected), sorted(expected - actual)
    _fail_unless(
        not extra and not missing,
        f"{kind} contents differ from the expected set\n  unexpected: {extra or '-'}\n  missing:    {missing or '-'}",
    )


def check_wheel(wheel: Path, version: str, licenses: list[str]) -> list[str]:
    """Check the wheel holds exactly the package files and its dist-info, with the license and ``py.typed``.

    :param wheel: the wheel file.
    :param version: the expected version.
    :param licenses: repository-relative license files.
    :return: the wheel's file names.
    :raises SmokeFailure: on any difference.
    """
    dist_info = f"{PACKAGE}-{version}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        contents = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    _fail_unless(len(names) == len(set(names)), "the wheel has duplicate entries")
    bad = [n for n in names if _forbidden(n) or any(fnmatch.fnmatch(n.rsplit("/", 1)[-1], p) for p in NOT_IN_WHEEL)]
    _fail_unless(not bad, f"the wheel ships caches or test code: {sorted(bad)}")
    expected = source_files([PACKAGE])
    _fail_unless(f"{PACKAGE}/py.typed" in expected, f"{PACKAGE}/py.typed is missing from the source tree")
    expected |= {f"{dist_info}/{n}" for n in ("METADATA", "WHEEL", "RECORD", "entry_points.txt")}
    expected |= {f"{dist_info}/licenses/{name}" for name in licenses}
    built = wheel.stat().st_mtime
    newer = sorted(n for n in expected - set(names) if (REPO / n).is_file() and (REPO / n).stat().st_mtime > built)
    _fail_unless(not newer, f"files appeared in the working tree after the wheel was built, rebuild: {newer}")
    _compare("wheel", set(names), expected)
    for name in licenses:
        shipped = contents[f"{dist_info}/licenses/{name}"]
        _fail_unless(shipped == (REPO / name).read_bytes(), f"the wheel's {name} differs from the repository's")
    metadata = contents[f"{dist_info}/METADATA"].decode()
    entry_points = contents[f"{dist_info}/entry_points.txt"].decode()
    for line in ("License-Expression: Apache-2.0", *(f"License-File: {name}" for name in licenses)):
        _fail_unless(line in metadata.splitlines(), f"METADATA lacks {line!r}")
    for needle in (
        "[apache_airflow_provider]",
        f"provider_info = {PACKAGE}.get_provider_info:get_provider_info",
        "[pytest11]",
        f"truconnect_emulator = {PACKAGE}.emulator.pytest_plugin",
        "[console_scripts]",
        f"truconnect-emulator = {PACKAGE}.emulator.cli:main",
    ):
        _fail_unless(needle in entry_points.splitlines(), f"entry_points.txt lacks {needle!r}")
    return names


def check_sdist(sdist: Path, version: str, licenses: list[str]) -> list[str]:
    """Check the sdist holds exactly the files ``[tool.hatch.build.targets.sdist] include`` selects.

    :param sdist: the ``.tar.gz``.
    :param version: the expected version.
    :param licenses: repository-relative license files.
    :return: the sdist's file names (without the top directory).
    :raises SmokeFailure: on any difference.
    """
    top = f"{PACKAGE}-{version}/"
    with tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers() if m.isfile()]
        names = [m.name for m in members]
        _fail_unless(all(n.startswith(top) for n in names), f"sdist entries outside {top}")
        relative = {n[len(top) :] for n in names}
        pkg_info = tf.extractfile(top + "PKG-INFO")
        assert pkg_info is not None
        metadata = pkg_info.read().decode()
    bad = sorted(n for n in relative if _forbidden(n))
    _fail_unless(not bad, f"the sdist ships caches or environments: {bad}")
    hatch = _pyproject()["tool"]
    assert isinstance(hatch, dict)
    include: list[str] = hatch["hatch"]["build"]["targets"]["sdist"]["include"]
    _fail_unless(all(p.startswith("/") for p in include), f"sdist include patterns must start with '/': {include}")
    expected = source_files(p.lstrip("/") for p in include) | set(licenses)
    expected |= {"pyproject.toml", ".gitignore", "PKG-INFO"}
    _compare("sdist", relative, expected)
    for required in ("LICENSE", "README.md", "CHANGELOG.md", "SECURITY.md", f"{PACKAGE}/py.typed"):
        _fail_unless(required in relative, f"the sdist lacks {required}")
    _fail_unless("License-File: LICENSE" in metadata.splitlines(), "PKG-INFO lacks 'License-File: LICENSE'")
    return sorted(relative)


# ---------------------------------------------------------------------------------------------- installed checks
def _json_after(text: str, opener: str) -> object:
    # The Airflow CLI may print notices before the JSON document.
    start = text.find(opener)
    _fail_unless(start >= 0, f"no JSON document in: {text[-2000:]}")
    return json.loads(text[start:])


def smoke_install(wheel: Path, *, uv: str, python: str, lock: Path, work: Path) -> None:
    """Install lock + wheel into a fresh venv under ``work`` and exercise the installed provider.

    :param wheel: the wheel file.
    :param uv: the uv executable.
    :param python: interpreter for the venv.
    :param lock: the requirements lock file.
    :param work: an empty scratch directory.
    :raises SmokeFailure: when a check fails.
    """
    venv, home, cwd = work / "venv", work / "airflow-home", work / "cwd"
    home.mkdir()
    cwd.mkdir()
    # Airflow's CLI imports far fewer modules than the lock installs: compiling on import is cheaper.
    uv_env = {**os.environ, "UV_COMPILE_BYTECODE": "0"}
    _step(f"fresh venv: {lock.name} + {wheel.name} (--no-deps), then uv pip check")
    _run([uv, "venv", "-q", "-p", python, venv], env=uv_env)
    vpy = venv / "bin" / "python"
    _run([uv, "pip", "install", "-q", "--python", vpy, "-r", lock], env=uv_env)
    _run([uv, "pip", "install", "-q", "--python", vpy, "--no-deps", wheel], env=uv_env)
    _run([uv, "pip", "check", "--python", vpy], env=uv_env)

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTHON", "TRUCONNECT", "VIRTUAL_ENV", "UV_", "PYTEST"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONNOUSERSITE="1",
    )

    _step("airflow providers list / providers hooks")
    airflow = venv / "bin" / "airflow"
    listed = _json_after(_run([airflow, "providers", "list", "-o", "json"], cwd=cwd, env=env).stdout, "[{")
    assert isinstance(listed, list)
    ours = [p for p in listed if p.get("package_name") == DIST_NAME]
    shown = [p.get("package_name") for p in listed]
    _fail_unless(len(ours) == 1, f"`airflow providers list` does not show {DIST_NAME} once: {shown}")
    version = _wheel_version(wheel)
    _fail_unless(ours[0].get("version") == version, f"providers list shows version {ours[0].get('version')}")
    hooks = _json_after(_run([airflow, "providers", "hooks", "-o", "json"], cwd=cwd, env=env).stdout, "[{")
    assert isinstance(hooks, list)
    by_type = {h.get("connection_type"): h for h in hooks}
    _fail_unless(
        by_type.get("truconnect", {}).get("class") == HOOK_CLASS,
        f"`airflow providers hooks` does not map truconnect to {HOOK_CLASS}: {by_type.get('truconnect')}",
    )

    _step("truconnect-emulator --help")
    usage = _run([venv / "bin" / "truconnect-emulator", "--help"], cwd=cwd, env=env).stdout
    _fail_unless("usage: truconnect-emulator" in usage, f"unexpected --help output: {usage[:500]}")

    _step("metadata, entry points, connection form, example DAGs (installed_checks.py)")
    dags = work / "dags"
    dags.mkdir()
    examples = sorted(p for p in source_files(["dags_examples"]) if fnmatch.fnmatch(p, "dags_examples/example_*.py"))
    _fail_unless(bool(examples), "no example DAGs found in dags_examples/")
    for rel in examples:
        shutil.copy2(REPO / rel, dags)
    checks = cwd / "installed_checks.py"
    shutil.copy2(HERE / "installed_checks.py", checks)
    _run([vpy, checks, "--version", version, "--venv", venv, "--dags", dags], cwd=cwd, env=env)

    _step("pytest plugin fixtures in a throw-away test")
    shutil.copy2(HERE / "plugin_fixture_check.py", cwd / "test_installed_plugin.py")
    # An ini file here makes this directory pytest's root: no configuration from the checkout applies.
    (cwd / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = _run([vpy, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_installed_plugin.py"], cwd=cwd, env=env)
    _fail_unless(
        re.search(r"^2 passed\b", result.stdout, re.MULTILINE) is not None,
        f"expected exactly 2 passing plugin tests:\n{result.stdout[-2000:]}",
    )


def _wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    _fail_unless(len(found) == 1, f"expected exactly one {pattern} in {dist}, found {[p.name for p in found]}")
    return found[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every check; print a one-line summary per stage.

    :param argv: command-line arguments.
    :return: the exit status (0 when everything passed).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("dist", type=Path, help="directory holding the one wheel and one sdist to check")
    parser.add_argument("--uv", default=str(REPO / ".tools" / "bin" / "uv"), help="uv executable")
    parser.add_argument("--python", default="python3", help="interpreter for the smoke venv")
    parser.add_argument("--lock", type=Path, default=REPO / "requirements" / "airflow-3.3.txt", help="lock file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (prints its path)")
    args = parser.parse_args(argv)
    # Stopped by make or CI: unwind through `finally` so the scratch directory goes too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    work = Path(tempfile.mkdtemp(prefix="truconnect-wheel-smoke-"))
    try:
        dist = args.dist.resolve()
        wheel, sdist = _one(dist, "*.whl"), _one(dist, "*.tar.gz")
        version = _wheel_version(wheel)
        _fail_unless(sdist.name == f"{PACKAGE}-{version}.tar.gz", f"sdist {sdist.name} does not match {wheel.name}")
        licenses = license_files()
        contents = {wheel: check_wheel(wheel, version, licenses), sdist: check_sdist(sdist, version, licenses)}
        for path, names in contents.items():
            _step(f"{path.name}: {len(names)} files, {path.stat().st_size / 1024:.1f} KiB, exactly the expected ones")
        smoke_install(wheel, uv=args.uv, python=args.python, lock=args.lock.resolve(), work=work)
    except (SmokeFailure, subprocess.TimeoutExpired) as exc:
        print(f"wheel-smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"wheel-smoke: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    _step("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
