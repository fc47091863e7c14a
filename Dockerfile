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
    && mkdir -p /app/credentials /app/client-setup \
    && chown -R nexus /app
COPY --from=build /src/target/release/nexus /usr/local/bin/nexus
WORKDIR /app
USER nexus
ENV CREDENTIALS_DIR=/app/credentials
EXPOSE 3000
# Docker's default seccomp profile blocks io_uring: nexus then falls back to epoll by
# itself and says so at start. `--security-opt seccomp=unconfined` (or a profile that
# allows io_uring_setup/enter/register) lets it use io_uring.
CMD ["nexus", "-p", "3000"]
