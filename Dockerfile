# keydesk container: one static-ish binary with templates and assets embedded.
# Build steps mirror CI: `cargo build --release --locked`.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Cache the dependency layer: build a stub crate with the real manifest first.
COPY Cargo.toml Cargo.lock ./
# (The manifest declares bench targets, so their files must exist too.)
RUN mkdir -p src/migrations benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/keydesk.rs && echo 'fn main() {}' > benches/claims.rs \
    && echo 'fn main() {}' > benches/scale.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/keydesk target/release/deps/keydesk* target/release/.fingerprint/keydesk*
COPY build.rs ./
COPY src ./src
COPY templates ./templates
COPY static ./static
COPY benches ./benches
# The commit `keydesk --version` names (the build context has no .git):
#   docker build --build-arg BUILD_KEYDESK_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG BUILD_KEYDESK_COMMIT=unknown
RUN cargo build --release --locked && strip target/release/keydesk

FROM debian:bookworm-slim
# CA certificates for TLS to api.vultr.com; nothing else is needed at run time.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/keydesk --create-home keydesk
COPY --from=builder /src/target/release/keydesk /usr/local/bin/keydesk
USER 10001:10001
WORKDIR /var/lib/keydesk
ENV KEYDESK_LISTEN=0.0.0.0:8080 \
    KEYDESK_DATABASE_URL=sqlite:///var/lib/keydesk/keydesk-audit.db \
    KEYDESK_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/keydesk"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["keydesk", "healthcheck"]
ENTRYPOINT ["keydesk"]
CMD ["serve"]
