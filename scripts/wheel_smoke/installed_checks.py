"""Checks of the installed wheel, run by ``run.py`` with the smoke venv's interpreter from outside the checkout.

Exits non-zero with a message naming the first failed check.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from importlib import metadata
from pathlib import Path

DIST_NAME = "airflow-provider-truconnect"
PACKAGE = "airflow_provider_truconnect"
CONN_TYPE = "truconnect"
#: Extras of the first release; later releases may add fields, never drop these (see CHANGELOG.md).
CORE_CONN_FIELDS = {"oauth_url", "scope", "client_auth", "timeout", "max_retries", "verify_ssl", "allow_insecure_http"}


def check(condition: bool, message: str) -> None:
    """:param condition: what must hold. :param message: what failed. :raises SystemExit: when it does not hold."""
    if not condition:
        raise SystemExit(f"installed_checks: {message}")


def check_installed_package(version: str, venv: Path) -> metadata.Distribution:
    """The package imports from the venv's site-packages, as a regular (not editable) install of the wheel.

    :param version: the wheel's version.
    :param venv: the smoke venv.
    :return: the installed distribution.
    """
    package = importlib.import_module(PACKAGE)
    location = Path(package.__file__ or "").resolve()
    check(location.is_relative_to(venv.resolve()), f"{PACKAGE} imported from {location}, not from {venv}")
    check(package.__version__ == version, f"__version__ {package.__version__} != wheel version {version}")
    dist = metadata.distribution(DIST_NAME)
    check(dist.version == version, f"installed version {dist.version} != {version}")
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    check(not direct_url.get("dir_info", {}).get("editable"), "the provider is an editable install")
    files = {str(f) for f in dist.files or ()}
    check(f"{PACKAGE}/py.typed" in files, "py.typed is not installed")
    return dist


def check_metadata(dist: metadata.Distribution) -> None:
    """License travels with the wheel; no invented project address; the extras resolve in the lock.

    :param dist: the installed distribution.
    """
    from packaging.requirements import Requirement

    meta = dist.metadata
    check(meta["License-Expression"] == "Apache-2.0", f"License-Expression is {meta['License-Expression']!r}")
    license_files = meta.get_all("License-File") or []
    check("LICENSE" in license_files, f"License-File lists {license_files}")
    license_text = Path(str(dist.locate_file(f"{PACKAGE}-{dist.version}.dist-info/licenses/LICENSE")))
    check(license_text.is_file(), "dist-info/licenses/LICENSE is not installed")
    check("Apache License" in license_text.read_text()[:200], "the installed LICENSE is not the Apache License")
    for url in meta.get_all("Project-URL") or []:
        check("github.com/truconnect" not in url, f"invented project URL: {url}")
    for raw in meta.get_all("Requires-Dist") or []:
        req = Requirement(raw)
        if req.marker is None or not req.marker.evaluate({"extra": "emulator"}):
            continue
        installed = metadata.version(req.name)
        check(req.specifier.contains(installed, prereleases=True), f"lock has {req.name} {installed}, needs {req}")


def check_entry_points(version: str, venv: Path) -> None:
    """Provider info, pytest plugin and console script are registered and load.

    :param version: the wheel's version.
    :param venv: the smoke venv.
    """
    eps = metadata.entry_points()
    providers = [ep for ep in eps.select(group="apache_airflow_provider") if ep.value.startswith(PACKAGE)]
    check(len(providers) == 1, f"apache_airflow_provider entry points: {providers}")
    info = providers[0].load()()
    check(info["package-name"] == DIST_NAME, f"package-name is {info['package-name']!r}")
    check(info.get("versions", [version])[0] == version, f"provider info versions {info.get('versions')}")
    plugins = [ep for ep in eps.select(group="pytest11") if ep.name == "truconnect_emulator"]
    check(len(plugins) == 1, "the pytest11 entry point truconnect_emulator is missing")
    plugins[0].load()
    scripts = [ep for ep in eps.select(group="console_scripts") if ep.name == "truconnect-emulator"]
    check(len(scripts) == 1, "the console script truconnect-emulator is not registered")
    check((venv / "bin" / "truconnect-emulator").is_file(), "bin/truconnect-emulator is not installed")


def check_connection_form(version: str) -> None:
    """Airflow's providers manager sees the provider and its connection form (``run.py`` checks the hook via the CLI).

    :param version: the wheel's version.
    """
    from airflow.providers_manager import ProvidersManager

    from airflow_provider_truconnect.get_provider_info import get_provider_info

    manager = ProvidersManager()
    provider = manager.providers.get(DIST_NAME)
    check(provider is not None, f"ProvidersManager does not know {DIST_NAME}")
    assert provider is not None
    check(provider.version == version, f"ProvidersManager has version {provider.version}")
    declared = set(get_provider_info()["connection-types"][0]["conn-fields"])
    check(CORE_CONN_FIELDS <= declared, f"conn-fields lost {sorted(CORE_CONN_FIELDS - declared)}")
    widgets = manager.connection_form_widgets
    missing = sorted(f for f in declared if f"extra__{CONN_TYPE}__{f}" not in widgets)
    check(not missing, f"connection form fields missing from providers_manager: {missing}")
    for name in declared:
        widget = widgets[f"extra__{CONN_TYPE}__{name}"]
        check(widget.package_name == DIST_NAME, f"form field {name} comes from {widget.package_name}")
    behaviour = manager.field_behaviours.get(CONN_TYPE) or {}
    relabeling = behaviour.get("relabeling", {})
    check(relabeling.get("login") == "Client ID", f"login relabelled as {relabeling.get('login')!r}")
    check(relabeling.get("password") == "Client Secret", f"password relabelled as {relabeling.get('password')!r}")


def check_example_dags(dags: Path) -> None:
    """Every example DAG file parses with the installed provider, without import errors.

    :param dags: a folder holding copies of the example DAG files.
    """
    from airflow.dag_processing.dagbag import DagBag

    files = {p.name for p in dags.glob("*.py")}
    # Airflow's own examples are off through AIRFLOW__CORE__LOAD_EXAMPLES (the 3.3 DagBag has no argument for it).
    bag = DagBag(dag_folder=str(dags))
    check(not bag.import_errors, f"example DAG import errors: {bag.import_errors}")
    parsed = {Path(dag.fileloc).name for dag in bag.dags.values()}
    check(parsed == files, f"files without a DAG: {sorted(files - parsed)}")
    print(f"installed_checks: {len(bag.dags)} example DAGs parsed: {', '.join(sorted(bag.dag_ids))}")


def main() -> int:
    """:return: 0 when every check passed (otherwise ``SystemExit`` with the failure)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", required=True)
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--dags", type=Path, required=True)
    args = parser.parse_args()
    dist = check_installed_package(args.version, args.venv)
    check_metadata(dist)
    check_entry_points(args.version, args.venv)
    check_connection_form(args.version)
    check_example_dags(args.dags)
    print("installed_checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
