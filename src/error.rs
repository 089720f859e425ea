//! The one error type of the service and its single mapping to a gRPC status.
//!
//! Messages are lowercase and name the field or limit that was broken, so a client can act on them
//! without reading server logs.

use tonic::{Code, Status};

/// Everything that can go wrong while serving a chat request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// A request field broke a documented rule.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field, or its path (`messages[2].content`).
        field: String,
        /// What rule was broken, including the limit.
        reason: String,
    },
    /// A replay was asked to start after the end of the room's log.
    #[error("{}{requested} is beyond the end of room {room} (next offset is {next})", field_prefix(field.as_deref()))]
    OffsetOutOfRange {
        /// The field that asked, as the door names it (`from_offset`, or `offset` of a JOIN);
        /// the room rules and engines report only the positions.
        field: Option<String>,
        /// The room asked for.
        room: String,
        /// The offset asked for.
        requested: u64,
        /// The offset the next message in the room will get.
        next: u64,
    },
    /// A capacity limit was reached; the request can be retried later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A name that must be unique is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but not in the stream's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The subscriber fell so far behind that messages it had not received left history.
    #[error(
        "subscriber too slow: missed {missed} messages that left history; \
         offsets from {resume_from} (epoch {epoch}) are still available"
    )]
    SlowConsumer {
        /// How many messages the subscriber will never receive on this stream.
        missed: u64,
        /// The oldest offset still in history.
        resume_from: u64,
        /// The epoch of the room's log.
        epoch: String,
    },
    /// The engine cannot go on serving a stream; the client reconnects and resumes.
    #[error("{}", engine_unavailable(reason, resume.as_ref()))]
    EngineUnavailable {
        /// What failed.
        reason: String,
        /// Where to resume (offset and epoch), when the stream had a position.
        resume: Option<(u64, String)>,
    },
    /// No valid token: the reason (missing, expired, bad signature, unknown key...).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The server is draining and closes every stream.
    #[error("server is shutting down; reconnect to another instance")]
    ShuttingDown,
    /// The stream's connection reached its maximum age: the client reconnects.
    #[error("this connection reached its maximum age; reconnect to resume")]
    ConnectionAged,
}

impl ChatError {
    /// An [`ChatError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error, an offset beyond the end named as the door's field `field`.
    pub fn offset_in(self, field: &str) -> Self {
        match self {
            Self::OffsetOutOfRange {
                room,
                requested,
                next,
                ..
            } => Self::OffsetOutOfRange {
                field: Some(field.into()),
                room,
                requested,
                next,
            },
            other => other,
        }
    }

    /// The same error with its field given as a path into the stream of messages
    /// (`messages[2].content`, counting from 0).
    pub fn at_message(self, index: usize) -> Self {
        match self {
            Self::InvalidArgument { field, reason } => Self::InvalidArgument {
                field: format!("messages[{index}].{field}"),
                reason,
            },
            Self::OffsetOutOfRange {
                field,
                room,
                requested,
                next,
            } => Self::OffsetOutOfRange {
                field: field.map(|field| format!("messages[{index}].{field}")),
                room,
                requested,
                next,
            },
            other => other,
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::OffsetOutOfRange { .. } => Code::OutOfRange,
            Self::ResourceExhausted(_) | Self::SlowConsumer { .. } => Code::ResourceExhausted,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ShuttingDown | Self::ConnectionAged | Self::EngineUnavailable { .. } => {
                Code::Unavailable
            }
        }
    }
}

fn field_prefix(field: Option<&str>) -> String {
    field.map(|field| format!("{field}: ")).unwrap_or_default()
}

fn engine_unavailable(reason: &str, resume: Option<&(u64, String)>) -> String {
    match resume {
        Some((offset, epoch)) => format!(
            "room engine unavailable ({reason}); reconnect with from_offset={offset} epoch={epoch} \
             to resume"
        ),
        None => format!("room engine unavailable ({reason}); reconnect to resume"),
    }
}

/// Trailing metadata with machine-readable copies of a stream's resume position.
pub const MISSED_METADATA: &str = "grpc-chat-missed";
/// See [`MISSED_METADATA`].
pub const RESUME_FROM_METADATA: &str = "grpc-chat-resume-from";
/// See [`MISSED_METADATA`].
pub const EPOCH_METADATA: &str = "grpc-chat-epoch";

impl From<ChatError> for Status {
    fn from(error: ChatError) -> Self {
        let mut status = Status::new(error.code(), error.to_string());
        let (missed, resume) = match &error {
            ChatError::SlowConsumer {
                missed,
                resume_from,
                epoch,
            } => (Some(*missed), Some((*resume_from, epoch.as_str()))),
            ChatError::EngineUnavailable {
                resume: Some((offset, epoch)),
                ..
            } => (None, Some((*offset, epoch.as_str()))),
            _ => (None, None),
        };
        // Machine-readable copies of the figures in the message, as trailing metadata; epochs
        // are letters and digits, so they are valid metadata as they are.
        let metadata = status.metadata_mut();
        if let Some(missed) = missed {
            metadata.insert(MISSED_METADATA, missed.to_string().parse().expect("digits"));
        }
        if let Some((offset, epoch)) = resume {
            metadata.insert(
                RESUME_FROM_METADATA,
                offset.to_string().parse().expect("digits"),
            );
            if let Ok(epoch) = epoch.parse() {
                metadata.insert(EPOCH_METADATA, epoch);
            }
        }
        status
    }
}
