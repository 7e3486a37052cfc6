# gent: one image for the compressor, the decompressor, replay and the demo.
# Build: docker build -t gent .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gent

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gent /usr/local/bin/gent
COPY config /etc/gent
# The bundled TrainTicket sample (see data/sample/SOURCE.md), traffic for `gent replay`.
COPY data/sample /usr/share/gent/sample
WORKDIR /var/lib/gent
# OTLP gRPC, OTLP HTTP, compressor metrics, link, decompressor metrics.
EXPOSE 4317 4318 9464 4320 9465
ENTRYPOINT ["gent"]
CMD ["demo"]
