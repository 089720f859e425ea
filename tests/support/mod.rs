//! What the test binaries share, one concern per module: the in-process server and its clients,
//! calls and their checks, one call through any door, external processes, HTTP, Prometheus, Envoy,
//! gRPC-Web, tokens and certificates.
//!
//! Each test binary includes it (`#[path = "../support/mod.rs"] mod helpers;`) and uses part of it.
#![allow(dead_code, unused_imports)]

mod app;
mod calls;
mod certs;
mod doors;
mod envoy;
pub mod exposition;
mod faults;
mod http;
mod nats;
mod process;
mod prometheus;
mod tokens;
mod web;

use std::time::Duration;

pub use app::*;
pub use calls::*;
pub use certs::*;
pub use doors::*;
pub use envoy::*;
pub use faults::*;
pub use http::*;
pub use nats::*;
pub use process::*;
pub use prometheus::*;
pub use tokens::*;
pub use web::*;

/// How long any single expected event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);
