# Build: the Rust toolchain image; run: slim Debian with CA certificates, as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin nexus

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin nexus \
    && mkdir -p /app/credentials /app/client-setup /app/data \
    && chown -R nexus /app
COPY --from=build /src/target/release/nexus /usr/local/bin/nexus
COPY --chown=nexus client-setup /app/client-setup
WORKDIR /app
USER nexus
# PORT (not `-p`) so that `nexus --check-health` reads the same port as the server, also
# when an env file changes it.
ENV PORT=3000 \
    CREDENTIALS_DIR=/app/credentials \
    CLIENT_SETUP_DIR=/app/client-setup \
    NEXUS_DB=sqlite:/app/data/nexus.db
# The request ledger (SQLite, WAL: nexus.db, nexus.db-wal, nexus.db-shm) lives here; a
# volume keeps it across container replacements. NEXUS_DB=postgres://… or off instead.
VOLUME /app/data
EXPOSE 3000
# nexus answers GET / itself; the check is the binary, so the image needs no curl or shell.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["nexus", "--check-health"]
# Docker's default seccomp profile blocks io_uring: nexus then falls back to epoll by
# itself and says so at start. `--security-opt seccomp=unconfined` (or a profile that
# allows io_uring_setup/enter/register) lets it use io_uring.
# SIGTERM starts a graceful shutdown of up to NEXUS_SHUTDOWN_GRACE_SECS (30 s, then up to
# 3 s for queued telemetry/Slack and up to 5 s for the ledger's last rows): give
# `docker stop -t` (compose: stop_grace_period) more.
CMD ["nexus"]
