# syntax=docker/dockerfile:1
#
# switchyard as a sidecar image: the binary, CA certificates and nothing else (no shell, no
# package manager), run as a numeric non-root user.
#
# Where base images can be pulled, the image builds its own binary:
#   docker build -t switchyard:0.1.0 .
# Where they cannot (CI here), it takes the static binary .ci/static-smoke built, staged with
# the host's CA bundle in target/image/ (.ci/image does both):
#   podman build --build-arg BINARY_FROM=prebuilt -t switchyard:0.1.0 .
#
# The demo inside the image, published on the host (the README's container example):
#   docker run --rm -p 15001:15001 switchyard:0.1.0 demo --listen 0.0.0.0:15001
#
# Static-pie binary, glibc linked in: a sidecar runs beside every pod, and a process that maps
# no shared libraries is about 1.9 MiB smaller in resident memory (peak RSS through the bench
# harness 12.6 -> 10.8 MiB). glibc >= 2.34 has its `files` and `dns` NSS modules built in, so
# getaddrinfo works in an image with no libraries at all (switchyard's own DNS clusters use
# hickory and /etc/resolv.conf either way).

# Where the binary comes from: `build` (the stage below) or `prebuilt` (the build context).
ARG BINARY_FROM=build

FROM rust:1.95-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# Only what the build needs (.dockerignore lets little else in): the manifest, the lockfile,
# build.rs, the sources, and benches/ because Cargo.toml declares bench targets there.
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches ./benches
COPY src ./src
# No .git in the context: the commit `--version` prints comes in as a build argument.
ARG SWITCHYARD_BUILD_COMMIT=unknown
# An explicit --target keeps build scripts and proc-macros dynamic: they cannot be static.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" SWITCHYARD_BUILD_COMMIT="$SWITCHYARD_BUILD_COMMIT" \
       cargo build --release --locked --target "$target" \
    && install -D -m 0755 "target/$target/release/switchyard" /out/switchyard \
    && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt \
    && mkdir -p /out/tmp

FROM scratch AS prebuilt
COPY target/image/ /out/

# hadolint ignore=DL3006
FROM ${BINARY_FROM} AS binary

FROM scratch
COPY --from=binary /out/switchyard /usr/local/bin/switchyard
COPY --from=binary /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# A /tmp the user owns: `demo --free-upstream-ports` writes its config copy there.
COPY --from=binary --chown=65532:65532 /out/tmp /tmp
# The shipped demo config, for `switchyard demo` in the image (its default --config is
# `config`, relative to this WORKDIR). `run` reads /etc/switchyard: mount yours there.
COPY config /usr/share/switchyard/config
WORKDIR /usr/share/switchyard
# No /etc/passwd: USER is a number, which Kubernetes' runAsNonRoot can verify.
USER 65532:65532
ENV PATH=/usr/local/bin
# 15001 proxy, 15000 admin (binds 127.0.0.1 unless --admin says otherwise), 15090 metrics.
EXPOSE 15001 15000 15090
# The image has no curl: the binary probes its own admin listener (200 LIVE, 503 DRAINING).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["switchyard", "probe", "--timeout", "2s", "http://127.0.0.1:15000/healthz/ready"]
ENTRYPOINT ["switchyard"]
CMD ["run", "--config", "/etc/switchyard"]
