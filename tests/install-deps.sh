#!/usr/bin/env bash
# Installs what nexus's integration tests need beyond Rust:
#   - the official `anthropic` Python SDK (tests/sdk.rs) and the Prometheus client's text
#     parser (tests/accounting.rs), from PyPI;
#   - headless Chromium, Debian's `chromium` package (tests/dashboard.rs);
#   - PostgreSQL's server binaries, Debian's `postgresql` package (tests/ledger_postgres.rs
#     starts throwaway clusters with them; the package's own cluster is not used);
#   - the Claude Code CLI, `@anthropic-ai/claude-code` from npm, into target/claude-code
#     or $NEXUS_CLAUDE_CODE_DIR (tests/claude_code.rs); Node.js and npm from Debian if
#     they are missing.
# Idempotent: each part is skipped when already in place. Meant for a fresh Debian
# machine (root).
set -euo pipefail
cd "$(dirname "$0")/.."

# The CLI version the end-to-end test was written against; bump it deliberately.
CLAUDE_CODE_VERSION=2.1.332
CLAUDE_CODE_DIR="${NEXUS_CLAUDE_CODE_DIR:-$PWD/target/claude-code}"

apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Python: anthropic SDK + prometheus_client -------------------------------------------

if ! command -v python3 >/dev/null 2>&1; then
    echo "install-deps: python3 not found; installing it with apt-get" >&2
    apt_install python3 python3-pip
fi

have_sdk() {
    python3 - <<'PY' 2>/dev/null
import anthropic, sys
import prometheus_client.parser
major, minor = (int(x) for x in anthropic.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (0, 40) and major < 1 else 1)
PY
}

if have_sdk; then
    echo "install-deps: anthropic $(python3 -c 'import anthropic; print(anthropic.__version__)') already installed"
else
    spec=('anthropic>=0.40,<1' 'prometheus-client>=0.17,<1')
    # Debian's own python3 refuses pip installs into the system (PEP 668); fall back to the
    # flag made for exactly this case on a throwaway test machine.
    python3 -m pip install --quiet --root-user-action=ignore "${spec[@]}" \
        || python3 -m pip install --quiet --root-user-action=ignore --break-system-packages "${spec[@]}"
    have_sdk || { echo "install-deps: anthropic or prometheus_client still not importable after pip install" >&2; exit 1; }
    echo "install-deps: anthropic $(python3 -c 'import anthropic; print(anthropic.__version__)') installed"
fi

# --- PostgreSQL -------------------------------------------------------------------------------

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1; then
    echo "install-deps: PostgreSQL $(ls /usr/lib/postgresql | sort -V | tail -1) already installed"
else
    echo "install-deps: installing Debian's postgresql (throwaway clusters for tests/ledger_postgres.rs)"
    apt_install postgresql
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "install-deps: initdb still missing after installing postgresql" >&2; exit 1; }
fi

# --- Headless Chromium ----------------------------------------------------------------------

if command -v chromium >/dev/null 2>&1 && chromium --version >/dev/null 2>&1; then
    echo "install-deps: $(chromium --version 2>/dev/null) already installed"
else
    echo "install-deps: installing Debian's chromium (headless browser for tests/dashboard.rs)"
    apt_install chromium fonts-liberation
    chromium --version >/dev/null 2>&1 || { echo "install-deps: chromium does not run after apt-get install" >&2; exit 1; }
    echo "install-deps: $(chromium --version 2>/dev/null) installed"
fi

# --- Claude Code CLI ------------------------------------------------------------------------

claude_bin="$CLAUDE_CODE_DIR/node_modules/.bin/claude"
have_claude() {
    "$claude_bin" --version 2>/dev/null | grep -q "^$CLAUDE_CODE_VERSION "
}

if have_claude; then
    echo "install-deps: Claude Code $CLAUDE_CODE_VERSION already installed in $CLAUDE_CODE_DIR"
else
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-deps: npm not found; installing nodejs and npm with apt-get" >&2
        apt_install nodejs npm
    fi
    echo "install-deps: installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION into $CLAUDE_CODE_DIR (about 400 MB)"
    mkdir -p "$CLAUDE_CODE_DIR"
    # The package says node >= 22; its postinstall only copies the native binary for this
    # platform into place, which older Node does fine, so the engine warning is noise.
    npm install --prefix "$CLAUDE_CODE_DIR" --no-save --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
    if ! have_claude; then
        # An npm that skips install scripts leaves a placeholder: run the postinstall by hand.
        (cd "$CLAUDE_CODE_DIR/node_modules/@anthropic-ai/claude-code" && node install.cjs)
    fi
    have_claude || { echo "install-deps: $claude_bin does not report version $CLAUDE_CODE_VERSION after npm install" >&2; exit 1; }
    echo "install-deps: $("$claude_bin" --version) installed"
fi
