"""``python -m airflow_provider_truconnect.emulator`` runs the CLI."""

from __future__ import annotations

import sys

from airflow_provider_truconnect.emulator.cli import main

sys.exit(main())
