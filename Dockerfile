# syntax=docker/dockerfile:1.7
# (BuildKit frontend pinned to 1.7: RUN --mount=type=cache below needs BuildKit.)
#
# Image of antenna-operator: one static binary on distroless/static, run as non-root.
#
#   docker build -t ghcr.io/antenna/antenna-operator:0.1.0 .
#
# The same image serves the operator (`antenna-operator run`, the chart's default) and the
# reference worker of the batch Pods (`antenna-operator worker`, the chart's default
# --worker-image).
#
# Review notes (this file cannot be built in the development sandbox, which has no Docker
# engine; each line was checked by hand, reasons inline):

# Builder: the official Rust image on Alpine. Alpine's toolchain targets musl, and Rust
# links musl binaries statically by default, so the result runs on distroless/static (no
# libc there). The tag pins the Rust minor version (keep it at or above rust-version in
# Cargo.toml, 1.85, and equal to rust-toolchain.toml when there is one); the Alpine
# release floats. For reproducible release builds pin the digest: rust:1.95-alpine@sha256:…
ARG RUST_IMAGE=rust:1.95-alpine
# Final base: no shell, no package manager, only CA certificates, /etc/passwd with the
# "nonroot" user (65532) and tzdata. Pin by digest in release builds.
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# musl-dev: libc headers and crt objects for the link. gcc: ring (the crypto backend of
# rustls, chosen with kube's "ring" feature) compiles some C and assembly through the cc
# crate; gcc also brings binutils (strip, readelf below). No OpenSSL and no cmake: the
# crate uses rustls with ring, not native-tls or aws-lc-rs.
RUN apk add --no-cache musl-dev gcc
WORKDIR /src
# Only what the build reads (.dockerignore also keeps target/, hack/ and tests out of the
# context). The [l] glob makes rust-toolchain.toml optional: COPY skips a pattern that
# matches nothing as long as another source matches.
COPY Cargo.toml Cargo.lock rust-toolchain.tom[l] ./
COPY src ./src
# --locked: fail rather than resolve new versions when Cargo.lock is stale.
# --release: optimized build. --bin: only the binary (no tests, benches, examples).
# Cache mounts keep the registry and target dir across builds without putting them in a
# layer; because target/ is a cache mount, the binary is copied out in the same RUN.
# strip: smaller image, the binary needs no debug symbols at runtime.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin antenna-operator \
 && cp target/release/antenna-operator /antenna-operator \
 && strip /antenna-operator
# Fail the build if the binary needs a shared library (it would not start on
# distroless/static, which has no dynamic loader): a static binary has no NEEDED entry.
# Two steps, so that a failing readelf fails the build instead of passing the check.
RUN readelf -d /antenna-operator > /tmp/dynamic && ! grep -q NEEDED /tmp/dynamic

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="antenna-operator" \
      org.opencontainers.image.description="Kubernetes operator for the batch jobs of the Antenna insect-monitoring platform" \
      org.opencontainers.image.licenses="Apache-2.0"
# The binary alone, owned by root and not writable by the runtime user.
COPY --from=build /antenna-operator /usr/local/bin/antenna-operator
# Numeric user, so that runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# 8000: REST facade; 9090: /metrics, /healthz, /readyz.
EXPOSE 8000 9090
ENTRYPOINT ["/usr/local/bin/antenna-operator"]
# Without arguments the image runs operator and facade, like the chart.
CMD ["run"]

# Further review notes:
# - No HEALTHCHECK: Kubernetes probes /healthz and /readyz (the chart), and distroless has
#   no shell or curl to run one.
# - Multi-arch: `docker buildx build --platform linux/amd64,linux/arm64 .` builds each
#   architecture natively in its own Alpine stage (under emulation when the host differs:
#   slow but correct). Cross-compiling with a musl target would be faster; not needed yet.
# - musl's allocator is slower than glibc's under many threads; the operator is I/O bound,
#   so this is acceptable. A global allocator crate would be the fix if profiles show it.
# - If Cargo.toml ever declares [[bench]], [[example]] or [[test]] targets with paths, or
#   a build.rs, Cargo reads them when it loads the manifest: COPY them (and allow them in
#   .dockerignore) or the build fails.
