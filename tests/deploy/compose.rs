//! The compose file and the configs it mounts.

use std::process::Command;

use crate::{helpers::tool, repo, run};

#[test]
fn docker_compose_accepts_the_compose_file() {
    run(Command::new(tool("docker-compose"))
        .arg("-f")
        .arg(repo("docker-compose.yml"))
        .args(["config", "-q"]));
}

#[test]
fn the_compose_file_follows_the_compose_spec() {
    let output = run(Command::new(tool("check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(repo("docker-compose.yml")));
    assert!(output.contains("ok -- validation done"), "{output}");
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let output = run(Command::new(tool("promtool"))
        .args(["check", "config"])
        .arg(repo("deploy/prometheus/prometheus.yml")));
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn published_ports_are_bound_to_loopback_and_images_pinned() {
    let compose = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    let ports: Vec<&str> = compose
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("- \"") && line.matches(':').count() == 2)
        .collect();
    assert!(ports.len() >= 7, "{ports:?}");
    for port in ports {
        assert!(
            port.starts_with("- \"127.0.0.1:"),
            "{port} is not bound to 127.0.0.1"
        );
    }
    for image in compose
        .lines()
        .filter(|line| line.trim_start().starts_with("image:"))
    {
        assert!(
            image.contains(":-"),
            "{image} has no pinned, overridable version"
        );
    }
}
