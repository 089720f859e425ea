//! The `grpc-chat` binary: parses the command line, sets up logging and runs the subcommand.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use grpc_chat::{
    cli::{self, Cli, Command},
    config::ServeConfig,
    server, shutdown, telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    telemetry::init(if serving { "info" } else { "warn" });
    let outcome = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                match cli.command {
                    Command::Serve(config) => serve(*config).await.map(|()| ExitCode::SUCCESS),
                    client => cli::run(client).await,
                }
            })
        });
    outcome.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    config.check().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    server::run(listener, config, shutdown::signal()).await
}
