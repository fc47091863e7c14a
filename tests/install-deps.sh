#!/usr/bin/env bash
# Installs what nexus's integration tests need beyond Rust: the official `anthropic`
# Python SDK (tests/sdk.rs) and the Prometheus client's text parser (tests/accounting.rs).
# Idempotent; meant for a fresh Debian machine (root).
set -euo pipefail

if ! command -v python3 >/dev/null 2>&1; then
    echo "install-deps: python3 not found; installing it with apt-get" >&2
    apt-get update -qq
    apt-get install -y -qq python3 python3-pip >/dev/null
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
    exit 0
fi

spec=('anthropic>=0.40,<1' 'prometheus-client>=0.17,<1')
# Debian's own python3 refuses pip installs into the system (PEP 668); fall back to the
# flag made for exactly this case on a throwaway test machine.
python3 -m pip install --quiet --root-user-action=ignore "${spec[@]}" \
    || python3 -m pip install --quiet --root-user-action=ignore --break-system-packages "${spec[@]}"

have_sdk || { echo "install-deps: anthropic or prometheus_client still not importable after pip install" >&2; exit 1; }
echo "install-deps: anthropic $(python3 -c 'import anthropic; print(anthropic.__version__)') installed"
