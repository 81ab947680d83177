#!/usr/bin/env bash
# Entry point on a fresh machine: installs what the project needs, then runs `hrdv <command>`.
#   ./hrdv.sh up        install everything, start the stack, the generator and the Dagster UI
#   ./hrdv.sh test      install everything and run the test suite (what .ci/run calls)
#   ./hrdv.sh status | down | generate ...   see `./hrdv.sh --help`
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv
PYTHON_BIN=${PYTHON:-python3}

install_system() {
    local missing=()
    [ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
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

install_system
install_python
command=${1:-help}
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
