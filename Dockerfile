# syntax=docker/dockerfile:1
# grpc-chat: multi-stage build. cargo-chef caches the dependency build in its own layer, so a
# source change rebuilds only the crate itself. The runtime image is Debian slim with the binary,
# running as a non-root user.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# make builds jemalloc, the server's allocator.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin grpc-chat \
 && cp target/release/grpc-chat /usr/local/bin/grpc-chat

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="grpc-chat" \
      org.opencontainers.image.description="A production real-time chat service: gRPC, Chitty-Chat, gRPC-Web and WebSocket front doors over shared rooms" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/grpc-chat/grpc-chat"
RUN groupadd --system --gid 10001 grpc-chat \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin grpc-chat
COPY --from=builder /usr/local/bin/grpc-chat /usr/local/bin/grpc-chat
USER 10001:10001
# GRPC_CHAT_ADDR is where the client subcommands (and so the HEALTHCHECK) find the server.
ENV GRPC_CHAT_LISTEN=0.0.0.0:50051 \
    GRPC_CHAT_WS_LISTEN=0.0.0.0:8080 \
    GRPC_CHAT_ADMIN_LISTEN=0.0.0.0:8081 \
    GRPC_CHAT_ADDR=http://127.0.0.1:50051
# gRPC and gRPC-Web; WebSocket rooms and the chat page; admin (/metrics, /healthz, /readyz).
EXPOSE 50051 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["grpc-chat", "health", "--connect-timeout", "2s"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["grpc-chat"]
CMD ["serve"]
