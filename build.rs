//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, so no system `protoc` is needed),
//! generates the messages and the client from it, writes the encoded descriptor set that the
//! reflection service serves, and generates from one table, [`RPCS`], both the server glue of
//! `chat.ChatService`, `chitty_chat.Chat` and `grpc.health.v1.Health` (with the service's own
//! codec) and the table of every RPC the server answers (`rpcs.rs`: their paths and kinds, for the
//! protocol rules and the metrics), so that adding an RPC is one line here.
//!
//! The server glue is described here rather than generated from the protos so that streamed
//! messages can be sent pre-encoded: each room event is encoded once and its bytes shared by every
//! subscriber. The routes and request/response wire types are exactly the proto's; the Go-client,
//! grpcurl and reflection tests hold them to it.

use std::{env, fmt::Write, fs, path::PathBuf};

use tonic_build::manual::{Method, Service};

const PROTOS: &[&str] = &["proto/chat.proto", "proto/chitty_chat.proto"];
const CODEC: &str = "crate::grpc::LeanCodec";
/// Pre-encoded responses (`chat.Message`, `chat.Metric`).
const ENCODED: &str = "crate::grpc::Encoded";

/// What an RPC streams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    ServerStream,
    ClientStream,
    BidiStream,
}

/// One RPC the server answers.
struct Rpc {
    /// Fully qualified service name.
    service: &'static str,
    /// Method name on the wire.
    method: &'static str,
    kind: Kind,
    /// Request and response types, for the services whose glue is generated here; `None` for
    /// those another crate serves (reflection).
    types: Option<(&'static str, &'static str)>,
}

const fn rpc(
    service: &'static str,
    method: &'static str,
    kind: Kind,
    input: &'static str,
    output: &'static str,
) -> Rpc {
    Rpc {
        service,
        method,
        kind,
        types: Some((input, output)),
    }
}

const CHAT: &str = "chat.ChatService";
const CHITTY: &str = "chitty_chat.Chat";
const HEALTH: &str = "grpc.health.v1.Health";
const HEALTH_REQUEST: &str = "tonic_health::pb::HealthCheckRequest";
const HEALTH_RESPONSE: &str = "tonic_health::pb::HealthCheckResponse";

/// Every RPC the server answers.
const RPCS: &[Rpc] = &[
    rpc(
        CHAT,
        "SendMessage",
        Kind::Unary,
        "crate::proto::SendMessageRequest",
        "crate::proto::SendMessageResponse",
    ),
    rpc(
        CHAT,
        "SubscribeMessages",
        Kind::ServerStream,
        "crate::proto::SubscribeRequest",
        ENCODED,
    ),
    rpc(
        CHAT,
        "UploadMessages",
        Kind::ClientStream,
        "crate::proto::Message",
        "crate::proto::UploadResponse",
    ),
    rpc(
        CHAT,
        "Chat",
        Kind::BidiStream,
        "crate::proto::Message",
        ENCODED,
    ),
    rpc(
        CHAT,
        "StreamMetrics",
        Kind::ServerStream,
        "crate::proto::MetricsRequest",
        ENCODED,
    ),
    rpc(
        CHAT,
        "GetRoom",
        Kind::Unary,
        "crate::proto::GetRoomRequest",
        "crate::proto::RoomState",
    ),
    rpc(
        CHAT,
        "DirectRoom",
        Kind::Unary,
        "crate::proto::DirectRoomRequest",
        "crate::proto::DirectRoomResponse",
    ),
    rpc(
        CHAT,
        "ListRooms",
        Kind::Unary,
        "crate::proto::ListRoomsRequest",
        "crate::proto::RoomDirectory",
    ),
    rpc(
        CHAT,
        "MarkRead",
        Kind::Unary,
        "crate::proto::MarkReadRequest",
        "crate::proto::ReadState",
    ),
    rpc(
        CHAT,
        "GetReadState",
        Kind::Unary,
        "crate::proto::GetReadStateRequest",
        "crate::proto::ReadState",
    ),
    rpc(
        CHAT,
        "SetTyping",
        Kind::Unary,
        "crate::proto::SetTypingRequest",
        "crate::proto::SetTypingResponse",
    ),
    rpc(
        CHAT,
        "EditMessage",
        Kind::Unary,
        "crate::proto::EditMessageRequest",
        "crate::proto::ChangeResponse",
    ),
    rpc(
        CHAT,
        "DeleteMessage",
        Kind::Unary,
        "crate::proto::DeleteMessageRequest",
        "crate::proto::ChangeResponse",
    ),
    rpc(
        CHAT,
        "React",
        Kind::Unary,
        "crate::proto::ReactRequest",
        "crate::proto::ChangeResponse",
    ),
    rpc(
        CHITTY,
        "Broadcast",
        Kind::BidiStream,
        "crate::proto::chitty_chat::ChatEvent",
        "crate::grpc::ChittyOutgoing",
    ),
    rpc(
        HEALTH,
        "Check",
        Kind::Unary,
        HEALTH_REQUEST,
        HEALTH_RESPONSE,
    ),
    rpc(
        HEALTH,
        "Watch",
        Kind::ServerStream,
        HEALTH_REQUEST,
        HEALTH_RESPONSE,
    ),
    Rpc {
        service: "grpc.reflection.v1.ServerReflection",
        method: "ServerReflectionInfo",
        kind: Kind::BidiStream,
        types: None,
    },
    Rpc {
        service: "grpc.reflection.v1alpha.ServerReflection",
        method: "ServerReflectionInfo",
        kind: Kind::BidiStream,
        types: None,
    },
];

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

    let services: Vec<Service> = [CHAT, CHITTY, HEALTH].into_iter().map(service).collect();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&services);
    fs::write(out_dir.join("rpcs.rs"), rpc_table())?;
    Ok(())
}

/// The generated glue of `name`, from its rows of [`RPCS`].
fn service(name: &'static str) -> Service {
    let (package, short) = name.rsplit_once('.').expect("a qualified service name");
    let mut builder = Service::builder().name(short).package(package);
    for rpc in RPCS.iter().filter(|rpc| rpc.service == name) {
        let (input, output) = rpc.types.expect("a service generated here has its types");
        let mut method = Method::builder()
            .name(snake(rpc.method))
            .route_name(rpc.method)
            .input_type(input)
            .output_type(output)
            .codec_path(CODEC);
        if matches!(rpc.kind, Kind::ClientStream | Kind::BidiStream) {
            method = method.client_streaming();
        }
        if matches!(rpc.kind, Kind::ServerStream | Kind::BidiStream) {
            method = method.server_streaming();
        }
        builder = builder.method(method.build());
    }
    builder.build()
}

/// `SubscribeMessages` → `subscribe_messages`.
fn snake(name: &str) -> String {
    let mut snake = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

/// `rpcs.rs`: a constant per RPC (`CHAT_SERVICE_SUBSCRIBE_MESSAGES`) and the list of them all.
fn rpc_table() -> String {
    let mut table = String::from("// Generated by build.rs from its table of RPCs.\n\n");
    let mut names = Vec::new();
    for rpc in RPCS {
        let short = rpc.service.rsplit_once('.').map_or(rpc.service, |(_, s)| s);
        let version = rpc
            .service
            .split('.')
            .find(|part| part.starts_with('v') && part[1..].starts_with(char::is_numeric))
            .map(|v| format!("{}_", v.to_ascii_uppercase()))
            .unwrap_or_default();
        let name = format!(
            "{}_{version}{}",
            snake(short).to_ascii_uppercase(),
            snake(rpc.method).to_ascii_uppercase()
        );
        let kind = match rpc.kind {
            Kind::Unary => "Unary",
            Kind::ServerStream => "ServerStream",
            Kind::ClientStream => "ClientStream",
            Kind::BidiStream => "BidiStream",
        };
        let _ = writeln!(
            table,
            "/// `/{service}/{method}`.\npub const {name}: Rpc = Rpc {{ service: {service:?}, method: {method:?}, path: \"/{service}/{method}\", kind: Kind::{kind} }};",
            service = rpc.service,
            method = rpc.method,
        );
        names.push(name);
    }
    let _ = writeln!(
        table,
        "\n/// Every RPC the server answers.\npub const RPCS: &[Rpc] = &[{}];",
        names.join(", ")
    );
    table
}
