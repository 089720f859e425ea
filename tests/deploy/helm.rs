//! The Helm chart, through the Helm SDK, kubernetes-validate and the operators' CRD schemas
//! (tests/deploy/helm.py).

use std::process::Command;

use crate::{helpers::tool, repo, run};

#[test]
fn the_chart_lints_strictly_and_renders_valid_manifests() {
    let venv = repo(".tools/venv/bin");
    let path = std::env::join_paths(std::iter::once(venv).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let output = run(Command::new(tool("python3"))
        .arg(repo("tests/deploy/helm.py"))
        .arg(repo("helm/grpc-chat"))
        .arg(repo(".tools/node"))
        .env("PATH", path));
    assert!(output.contains("bad values refused: ok"), "{output}");
}

#[test]
fn the_chart_ships_the_same_dashboard_as_grafana() {
    let chart = std::fs::read_to_string(repo("helm/grpc-chat/dashboards/grpc-chat.json")).unwrap();
    let grafana = std::fs::read_to_string(repo("grafana/dashboards/grpc-chat.json")).unwrap();
    assert_eq!(
        chart, grafana,
        "copy grafana/dashboards/grpc-chat.json into the chart"
    );
}
