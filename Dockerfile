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
ENTRYPOINT ["reflexio-bridge"]
CMD ["serve", "--listen", "0.0.0.0:8000", "--store", "/var/lib/reflexio/metrics.db"]
