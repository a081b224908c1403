# stateful-mcp container image.
#
#   docker build -t stateful-mcp .
#   docker run --rm -p 8080:8080 stateful-mcp                  # memory backend, one replica
#   docker run --rm -p 8080:8080 \
#     -e STATEFUL_MCP__STORE__BACKEND=redis \
#     -e STATEFUL_MCP__REDIS__URL=redis://redis.example:6379 stateful-mcp
#
# The image holds the binary only: every setting has a compiled-in default
# (config/default.toml documents them) and is overridden with STATEFUL_MCP__* variables
# or `--config FILE` from a mounted file. The cache mounts need BuildKit (the default
# builder since Docker 23, whose built-in frontend supports them: no `# syntax=` line,
# which would make BuildKit fetch a frontend image from a registry).

# Any Rust release at or above the crate's rust-version (1.88) builds it; pin a
# minor version here (e.g. 1.88) for reproducible builds.
ARG RUST_VERSION=1

######## build ########
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build

# Dependencies first: a build of the manifests with empty sources compiles every
# dependency into this layer, which is reused until a manifest or Cargo.lock changes.
# Cargo reads every target the manifests declare, so the conformance binary, the
# benchmarks and the workspace's test harness (testkit, a dev-dependency) get empty
# stand-ins too (the benchmarks and testkit are not built: `cargo build` builds the
# library and the binaries).
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml testkit/
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    mkdir -p src/bin/stateful-mcp-conformance benches testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/stateful-mcp-conformance/main.rs \
    && touch src/lib.rs benches/cache.rs benches/load.rs benches/mcp_load.rs \
       testkit/src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources (the stand-ins of the benchmarks and of testkit stay: .dockerignore
# keeps benches/ and testkit/src/ out). config/default.toml is compiled into the
# binaries (include_str!). The image holds the shipping binary only:
# stateful-mcp-conformance is built (it must compile) and left.
# `touch` makes sure cargo rebuilds the crate over the empty one of the layer above
# even when the copied files carry older modification times.
COPY src ./src
COPY config ./config
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    touch src/main.rs src/lib.rs src/bin/stateful-mcp-conformance/main.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/stateful-mcp /out/stateful-mcp

######## runtime ########
# debian:bookworm-slim rather than distroless: the HEALTHCHECK below needs bash, and
# the Kubernetes preStop hook runs `sleep`; both are already in the slim image, so
# nothing is installed. The binary needs only glibc and libgcc_s (no OpenSSL).
FROM debian:bookworm-slim AS runtime

# A fixed numeric UID/GID so that `runAsNonRoot` (Kubernetes) can verify it.
RUN groupadd --system --gid 10001 stateful-mcp \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin stateful-mcp

COPY --from=builder /out/stateful-mcp /usr/local/bin/stateful-mcp

USER 10001:10001

# Listen on every interface inside the container. Everything else keeps its default
# until set: the memory backend (one replica), loopback-only Host checking, ...
ENV STATEFUL_MCP__SERVER__BIND=0.0.0.0:8080
EXPOSE 8080

# Liveness without curl or wget: bash's /dev/tcp opens a connection to the port of
# STATEFUL_MCP__SERVER__BIND, sends `GET /healthz` and succeeds on a 200 status line.
# /healthz never touches Redis, so a Redis outage does not mark replicas unhealthy
# (readiness, /readyz, is the load balancer's business).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/bin/bash", "-c", "port=${STATEFUL_MCP__SERVER__BIND##*:}; exec 3<>/dev/tcp/127.0.0.1/${port:-8080} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r -t 2 _ status _ <&3 && [ \"$status\" = 200 ]"]

# SIGTERM starts the drain: the listener closes, in-flight requests get
# server.shutdown_timeout_secs to finish. Give the container at least that long to stop
# (docker stop -t / stop_grace_period / terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/stateful-mcp"]
