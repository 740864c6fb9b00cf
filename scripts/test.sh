#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing, then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k session -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<version>/bin.
if ! command -v postgres >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
  missing+=(postgresql)
fi
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "the tests need these system packages: ${missing[*]}" >&2
    exit 1
  fi
fi

python3 -m pip install -q -e '.[dev]'
python3 -m pytest "$@"
