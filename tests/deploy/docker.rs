//! The Dockerfile, built and run by a real Docker engine (tests/deploy/docker.sh, which says what
//! stands in for the base images no registry can serve here).

use std::process::Command;

use crate::{helpers::free_addr, repo, run};

#[test]
fn the_image_builds_runs_as_non_root_and_turns_healthy() {
    let port = free_addr().port();
    let output = run(Command::new("bash")
        .arg(repo("tests/deploy/docker.sh"))
        .arg(port.to_string()));
    assert!(output.contains("health: healthy"), "{output}");
    assert!(output.contains("user: 10001:10001"), "{output}");
    for service in [
        "chat.ChatService",
        "chitty_chat.Chat",
        "grpc.health.v1.Health",
    ] {
        assert!(
            output.lines().any(|line| line == service),
            "{service} not listed:\n{output}"
        );
    }
}
