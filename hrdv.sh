#!/usr/bin/env bash
# Entry point on a fresh machine: installs what the project needs, then runs `hrdv <command>`.
#   ./hrdv.sh up        install everything, start the stack, the generator, the Dagster UI and Superset
#   ./hrdv.sh test      install everything and run the test suite (what .ci/run calls)
#   ./hrdv.sh status | down | generate ...   see `./hrdv.sh --help`
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv
SUPERSET_VENV=$ROOT/.superset-venv
SUPERSET_REQUIREMENTS=stack/superset/requirements.txt
PYTHON_BIN=${PYTHON:-python3}

install_system() {
    local missing=()
    [ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
    # The browser tests drive Debian's Chromium with Playwright (never a downloaded browser build).
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing ${missing[*]} from Debian's packages"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

install_python() {
    local stamp
    stamp=$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)
    [ -f "$stamp" ] && return
    echo "==> installing the Python environment in $VENV (about 30 s)"
    [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
    "$VENV/bin/pip" install -q -e '.[test]'
    touch "$stamp"
}

# Apache Superset (the dashboards) in a venv of its own: it needs SQLAlchemy 1.4, .venv has 2.x.
install_superset() {
    local stamp
    stamp=$SUPERSET_VENV/.installed-$(sha1sum "$SUPERSET_REQUIREMENTS" | cut -c1-12)
    [ -f "$stamp" ] && return
    echo "==> installing Apache Superset in $SUPERSET_VENV (about 30 s, plus the download)"
    [ -x "$SUPERSET_VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$SUPERSET_VENV"
    "$SUPERSET_VENV/bin/pip" install -q -r "$SUPERSET_REQUIREMENTS"
    rm -f "$SUPERSET_VENV"/.installed-*
    touch "$stamp"
}

install_system
install_python
command=${1:-help}
case "$command" in
    up|test) install_superset ;;  # the tests start Superset too
esac
case "$command" in
    test)
        shift
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    help|-h|--help)
        exec "$VENV/bin/hrdv" --help
        ;;
    *)
        exec "$VENV/bin/hrdv" "$@"
        ;;
esac
