#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when they are missing, and says what and why before doing so.
# Each line of PACKAGES: <command that proves the package is there> <package> <why the tests need it>.
set -euo pipefail

PACKAGES=(
  "chromium|chromium|browser tests of the Connections form (Playwright drives Debian's Chromium; no browser download)"
  "/usr/lib/postgresql/15/bin/pg_ctl|postgresql|metadata database of the CeleryExecutor deployment in tests/e2e (a throw-away cluster)"
  "redis-server|redis-server|Celery broker of the CeleryExecutor deployment in tests/e2e (a throw-away server on loopback)"
)

missing=()
for entry in "${PACKAGES[@]}"; do
  IFS='|' read -r probe package why <<<"$entry"
  if ! command -v "$probe" >/dev/null 2>&1 && [ ! -x "$probe" ]; then
    echo "system-deps: installing Debian package '$package': $why"
    missing+=("$package")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

run() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
run apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
echo "system-deps: installed ${missing[*]}"
