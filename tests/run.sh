#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs the whole
# suite with the io_uring driver and the integration tests again with the epoll fallback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
cargo test --locked
echo "== integration tests again with NEXUS_DRIVER=epoll =="
NEXUS_DRIVER=epoll cargo test --locked --test '*'
