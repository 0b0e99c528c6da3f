# syntax=docker/dockerfile:1
#
# switchyard as a sidecar image: the binary only, as a non-root user.
#   docker build -t switchyard:0.1.0 .
#   docker run --rm -v "$PWD/config:/etc/switchyard:ro" -p 15001:15001 switchyard:0.1.0
#
# The build stage builds what .ci/static-smoke builds and runs in CI: a static-pie binary,
# glibc linked in, with the toolchain CI uses. A sidecar runs beside every pod, and a process
# that maps no shared libraries is about 1.9 MiB smaller in resident memory (peak RSS through
# the bench harness 12.6 -> 10.8 MiB). Both stages are Debian 12 (bookworm): getaddrinfo in a
# static glibc still loads the runtime's NSS modules, which must be of the same glibc release.
FROM rust:1.95-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# Only what the build needs (.dockerignore lets nothing else in): the manifest, the lockfile,
# the sources, and benches/ because Cargo.toml declares a bench target there.
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches ./benches
COPY src ./src
# An explicit --target keeps build scripts and proc-macros dynamic: they cannot be static.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" \
    && install -D -m 0755 "target/$target/release/switchyard" /out/switchyard

# Distroless "cc": glibc (for its NSS modules) and libgcc, no shell, no package manager. Its `nonroot` user is
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
