# syntax=docker/dockerfile:1
#
# The secret-santa image: a release build on Debian bookworm, run on
# distroless (glibc, CA certificates, no shell, no package manager) as the
# non-root user 65532.
#
#   docker build -t secret-santa:dev .
#   docker run --rm -p 8443:8443 -p 8080:8080 secret-santa:dev serve --self-signed
#
# In Kubernetes, manifests/ mounts the certificate and config read-only and
# runs it with a read-only root filesystem: the binary writes no files
# (`secret-santa certs --out DIR` writes only into DIR).

FROM docker.io/library/rust:1.94-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches: cargo will not read it without them.
COPY benches ./benches
# --locked: exactly the versions in Cargo.lock. The cache mounts only speed
# up rebuilds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin secret-santa \
 && cp target/release/secret-santa /usr/local/bin/secret-santa

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="secret-santa" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that generates Secret values once and mirrors them to external secret stores" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /usr/local/bin/secret-santa /usr/local/bin/secret-santa
USER 65532:65532
# 8443: webhook (HTTPS, POST /mutate); 8080: /healthz, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/secret-santa"]
# Every serve flag also reads a SECRET_SANTA_* variable, so the image can be
# configured by environment alone (SECRET_SANTA_TLS_CERT_FILE, ...).
CMD ["serve"]
