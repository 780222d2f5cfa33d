# pushgate: multi-stage build. The runtime image holds only the binary and CA certificates
# and runs as a non-root user. Build: docker build -t pushgate .
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pushgate && cp target/release/pushgate /pushgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /pushgate /usr/local/bin/pushgate
USER nonroot:nonroot
# Config at /etc/pushgate/pushgate.toml, secrets mounted where it points.
# (The admin HTTP port for metrics and health comes with the observability issue.)
ENTRYPOINT ["/usr/local/bin/pushgate"]
CMD ["run", "--config", "/etc/pushgate/pushgate.toml"]
