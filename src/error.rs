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
    #[error("from_offset: {requested} is beyond the end of room {room} (next offset is {next})")]
    OffsetOutOfRange {
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
         offsets from {resume_from} are still available"
    )]
    SlowConsumer {
        /// How many messages the subscriber will never receive on this stream.
        missed: u64,
        /// The oldest offset still in history.
        resume_from: u64,
    },
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

    /// The same error with its field given as a path into the stream of messages
    /// (`messages[2].content`, counting from 0).
    pub fn at_message(self, index: usize) -> Self {
        match self {
            Self::InvalidArgument { field, reason } => Self::InvalidArgument {
                field: format!("messages[{index}].{field}"),
                reason,
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
            Self::ShuttingDown | Self::ConnectionAged => Code::Unavailable,
        }
    }
}

impl From<ChatError> for Status {
    fn from(error: ChatError) -> Self {
        let mut status = Status::new(error.code(), error.to_string());
        if let ChatError::SlowConsumer {
            missed,
            resume_from,
        } = &error
        {
            // Machine-readable copies of the figures in the message, as trailing metadata.
            let metadata = status.metadata_mut();
            metadata.insert(
                "grpc-chat-missed",
                missed.to_string().parse().expect("digits"),
            );
            metadata.insert(
                "grpc-chat-resume-from",
                resume_from.to_string().parse().expect("digits"),
            );
        }
        status
    }
}
