"""Hook tests. The legacy form's widget tests need Airflow 2's classic web UI (``airflow.www``, Flask-AppBuilder):
Airflow 3 has neither, so there they are not collected (``make unit-af211`` runs them)."""

from __future__ import annotations

import importlib.util

collect_ignore = [] if importlib.util.find_spec("airflow.www") else ["test_legacy_form_flask.py"]
