//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, so no system `protoc` is needed),
//! generates the messages and the client from it, writes the encoded descriptor set that the
//! reflection service serves, and generates the server glue of `chat.ChatService`,
//! `chitty_chat.Chat` and `grpc.health.v1.Health`, all with the service's own codec.
//!
//! The server glue is described here rather than generated from the protos so that streamed
//! messages can be sent pre-encoded: each room event is encoded once per protocol and its bytes
//! shared by every subscriber. The routes and request/response wire types are exactly the proto's; the
//! Go-client, grpcurl and reflection tests hold them to it.

use std::{env, fs, path::PathBuf};

use tonic_build::manual::{Method, Service};

const PROTOS: &[&str] = &["proto/chat.proto", "proto/chitty_chat.proto"];
const CODEC: &str = "crate::grpc::LeanCodec";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS.iter())?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .build_server(false)
        .compile_fds(compiler.file_descriptor_set())?;

    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&[chat_service(), chitty_chat_service(), health_service()]);
    Ok(())
}

/// Pre-encoded response messages.
const ENCODED: &str = "crate::grpc::Encoded";

fn method(
    name: &str,
    route: &str,
    input: &str,
    output: &str,
) -> tonic_build::manual::MethodBuilder {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("crate::proto::{input}"))
        .output_type(output)
        .codec_path(CODEC)
}

/// `grpc.health.v1.Health` with tonic-health's messages, so its requests are decoded like every
/// other service's.
fn health_service() -> Service {
    let health = |name: &str, route: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type("tonic_health::pb::HealthCheckRequest")
            .output_type("tonic_health::pb::HealthCheckResponse")
            .codec_path(CODEC)
    };
    Service::builder()
        .name("Health")
        .package("grpc.health.v1")
        .method(health("check", "Check").build())
        .method(health("watch", "Watch").server_streaming().build())
        .build()
}

fn chitty_chat_service() -> Service {
    Service::builder()
        .name("Chat")
        .package("chitty_chat")
        .method(
            method(
                "broadcast",
                "Broadcast",
                "chitty_chat::ChatEvent",
                "crate::grpc::ChittyOutgoing",
            )
            .client_streaming()
            .server_streaming()
            .build(),
        )
        .build()
}

fn chat_service() -> Service {
    Service::builder()
        .name("ChatService")
        .package("chat")
        .method(
            method(
                "send_message",
                "SendMessage",
                "SendMessageRequest",
                "crate::proto::SendMessageResponse",
            )
            .build(),
        )
        .method(
            method(
                "subscribe_messages",
                "SubscribeMessages",
                "SubscribeRequest",
                ENCODED,
            )
            .server_streaming()
            .build(),
        )
        .method(
            method(
                "upload_messages",
                "UploadMessages",
                "Message",
                "crate::proto::UploadResponse",
            )
            .client_streaming()
            .build(),
        )
        .method(
            method("chat", "Chat", "Message", ENCODED)
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .method(
            method(
                "stream_metrics",
                "StreamMetrics",
                "MetricsRequest",
                "crate::proto::Metric",
            )
            .server_streaming()
            .build(),
        )
        .build()
}
