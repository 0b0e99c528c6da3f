# syntax=docker/dockerfile:1
#
# switchyard as a sidecar image: the binary only, as a non-root user.
#   docker build -t switchyard:0.1.0 .
#   docker run --rm -v "$PWD/config:/etc/switchyard:ro" -p 15001:15001 switchyard:0.1.0
#
# The build stage runs the command CI runs (`cargo build --release --locked`, .ci/run), with
# the toolchain CI uses. Both stages are Debian 12 (bookworm): the binary links glibc
# dynamically, so the runtime's glibc must be at least the build's.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Only what the build needs (.dockerignore lets nothing else in): the manifest, the lockfile,
# the sources, and benches/ because Cargo.toml declares a bench target there.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/switchyard /out/switchyard

# Distroless "cc": glibc and libgcc, no shell, no package manager. Its `nonroot` user is
# 65532; USER names it by number so Kubernetes' runAsNonRoot can verify it.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/switchyard /usr/local/bin/switchyard
USER 65532:65532
# 15001 proxy, 15000 admin (binds 127.0.0.1 unless --admin says otherwise), 15090 metrics.
EXPOSE 15001 15000 15090
# The image has no curl: the binary probes its own admin listener (200 LIVE, 503 DRAINING).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["switchyard", "probe", "--timeout", "2s", "http://127.0.0.1:15000/healthz/ready"]
ENTRYPOINT ["switchyard"]
CMD ["run", "--config", "/etc/switchyard"]
