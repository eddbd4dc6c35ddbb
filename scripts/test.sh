#!/usr/bin/env bash
# The README's test command, and CI's: install ftlab with its test extra, install Chromium for the
# browser test of the HTML report (Debian's packages; only when missing and we are root), run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]'
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: installing chromium and chromium-driver (for tests/report/test_html.py)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "scripts/test.sh: chromium is missing and cannot be installed here; the browser test will skip (fail under CI)" >&2
    fi
fi
exec python -m pytest "$@"
