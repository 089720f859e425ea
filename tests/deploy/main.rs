//! Deployment artefacts, checked with the real tools: the Docker image (built and run), the compose
//! stack's configs, the Grafana dashboards against a real Prometheus, and the Helm chart.
//!
//! A test binary of its own so that it runs after the API tests: the image build is heavy.

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod helpers;

mod compose;
mod dashboards;
mod docker;
mod helm;

use std::{path::PathBuf, process::Command};

/// A path in the repository.
fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `command`; returns its combined output, failing the test on a non-zero exit.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}
