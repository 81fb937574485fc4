# syntax=docker/dockerfile:1
#
# sqsd container image: one static binary and CA certificates, nothing else.
#
#   docker build -t sqsd .
#   docker run --rm -e SQSD_QUEUE_URL=... -e SQSD_WORKER_URL=http://app:8080 sqsd
#
# The build stage runs the same release build as CI (`cargo build --release
# --locked`); on Alpine the host target is musl, so the result is static.

FROM rust:1.95-alpine3.22 AS build
# C toolchain and headers for the TLS crates (ring, aws-lc-sys). The Alpine
# release is pinned above; its packages follow that release's fixes.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev build-base cmake perl ca-certificates
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY bench ./bench
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/sqsd /sqsd \
    && /sqsd --version

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /sqsd /usr/local/bin/sqsd
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    SQSD_ADMIN_ADDR=0.0.0.0:9191
# Not root: the numeric id needs no /etc/passwd in the image.
USER 65532:65532
EXPOSE 9191
STOPSIGNAL SIGTERM
# `sqsd healthcheck` asks the daemon's own /healthz: no shell or curl needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/sqsd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sqsd"]
