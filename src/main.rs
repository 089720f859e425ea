//! The `grpc-chat` binary: parses the command line, sets up telemetry and runs the subcommand.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
mod clients;

use clients::cli::{self, Cli, Command};
use grpc_chat::{
    config::ServeConfig,
    server::{self, Listeners},
    shutdown,
    telemetry::{self, LogFormat},
};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                match cli.command {
                    Command::Serve(config) => serve(*config).await.map(|()| ExitCode::SUCCESS),
                    client => {
                        let telemetry = telemetry::init("warn", LogFormat::Text)?;
                        let outcome = cli::run(client).await;
                        telemetry.shutdown().await;
                        outcome
                    }
                }
            })
        });
    outcome.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Before anything is bound: settings that make no sense must not take a port first
    // (App::build checks them for callers that bind their own listeners).
    config.check().map_err(anyhow::Error::msg)?;
    let telemetry = telemetry::init("info", config.log_format)?;
    // Purges freed pages on its own threads, so memory returns even when the server goes quiet.
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "cannot start the allocator's background threads");
    }
    // Before anything listens: a SIGTERM from then on drains.
    let stop = shutdown::signal();
    let listeners = Listeners {
        grpc: bind(config.listen).await?,
        websocket: bind(config.ws_listen).await?,
        admin: bind(config.admin_listen).await?,
    };
    let served = server::run(listeners, config, stop).await;
    telemetry.shutdown().await;
    served
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    grpc_chat::net::bind(addr).with_context(|| format!("cannot listen on {addr}"))
}

/// jemalloc rather than the system allocator: with its background threads on (see `serve`) it
/// gives memory freed after a burst back to the system, where glibc's malloc kept a flood's peak
/// resident for good (BENCHMARKS.md has the figures).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
