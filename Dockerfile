# syntax=docker/dockerfile:1
# pushgate container image: multi-stage build, small non-root runtime.
#
#   docker build -t pushgate:0.1.0 .
#
# Not built in this repository's CI (its machines have no Docker engine):
# scripts/check-deploy.sh lints this file (hadolint), checks that every COPY
# source exists and is not excluded by .dockerignore, and that the build
# command below is the one it names. See README "Deploying on Kubernetes".

# --- build stage -----------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# What the build reads: the workspace manifests and lock file, the sources of
# both members (Cargo needs the loadtest manifest), the patched h2
# (vendor/h2, [patch.crates-io]) and config/dev (the simulators' dev
# certificates are compiled in with include_str!). .dockerignore keeps the
# rest of the repository out of the context.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY loadtest ./loadtest
COPY vendor/h2 ./vendor/h2
COPY config/dev ./config/dev
# Cache mounts keep the registry and the target directory between builds; the
# binary is copied out in the same step because cache mounts are not part of
# the image. The release profile keeps line tables (70 MB); the image drops
# them and keeps the symbols, so backtraces still name functions (14 MB).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pushgate \
    && cp target/release/pushgate /usr/local/bin/pushgate \
    && strip --strip-debug /usr/local/bin/pushgate

# --- runtime stage ---------------------------------------------------------
# distroless/cc: glibc, libgcc and CA certificates, no shell, no package
# manager. The :nonroot tag's user is 65532; it is set numerically below so
# that Kubernetes' runAsNonRoot can verify it.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/pushgate /usr/local/bin/pushgate
USER 65532:65532
# Config: mount a ConfigMap at /etc/pushgate (pushgate.toml). Secrets (APNs
# .p8, FCM service account, VAPID key) are files mounted from Secrets under
# /var/run/secrets/pushgate/ where the config points; the broker URL comes
# from PUSHGATE_AMQP__URL.
ENV PUSHGATE_CONFIG=/etc/pushgate/pushgate.toml
# 9090: the admin HTTP server ([admin] listen): /metrics, /healthz, /readyz,
# POST /v1/events, /v1/campaigns/{id}[/stop|/resume].
EXPOSE 9090
# `pushgate run` by default; other sub-commands stay reachable
# (`docker run IMAGE check-config`).
ENTRYPOINT ["/usr/local/bin/pushgate"]
CMD ["run"]
