# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim Debian image as
# a non-root user. Migrations and the web console are embedded in the binary.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Build dependencies first so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY load-tests/Cargo.toml load-tests/Cargo.toml
RUN mkdir -p src load-tests/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > load-tests/src/main.rs \
    && cargo build --release --locked -p relais \
    && rm -rf src load-tests/src
COPY src src
COPY migrations migrations
COPY web web
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p relais

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/relais --create-home relais
COPY --from=build /src/target/release/relais /usr/local/bin/relais
USER relais
WORKDIR /var/lib/relais
ENV RELAIS_BIND=0.0.0.0:8080 \
    RELAIS_DATA_DIR=/var/lib/relais \
    RELAIS_LOG_FORMAT=json
VOLUME ["/var/lib/relais"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/relais"]
CMD ["serve"]
