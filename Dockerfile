# reflexio-bridge as a container image (used by docs/monitoring/docker-compose.monitoring.yml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p reflexio-bridge

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/reflexio reflexio \
    && install -d -o reflexio -g reflexio /var/lib/reflexio
COPY --from=build /src/target/release/reflexio-bridge /usr/local/bin/reflexio-bridge
USER reflexio
VOLUME /var/lib/reflexio
EXPOSE 8000
# The default command serves on every interface with a bearer token: the file below, created
# with a random token at the first start (read it with `cat /var/lib/reflexio/token` in the
# container). To bring your own, mount it as a secret and point the variable at it, e.g.
# REFLEXIO_BRIDGE_AUTH_TOKEN_FILE=/run/secrets/reflexio_token (an existing file is never
# replaced). Every setting can be changed the same way (docs/bridge.md).
ENV REFLEXIO_BRIDGE_LISTEN=0.0.0.0:8000 \
    REFLEXIO_BRIDGE_STORE=/var/lib/reflexio/metrics.db \
    REFLEXIO_BRIDGE_AUTH_TOKEN_FILE=/var/lib/reflexio/token \
    REFLEXIO_BRIDGE_AUTH_TOKEN_CREATE=true
ENTRYPOINT ["reflexio-bridge"]
CMD ["serve"]
