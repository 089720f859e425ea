//! The `grpc-chat` binary itself: serve, signals, config errors and the client subcommands.

use std::{
    io::{BufRead, Write},
    process::Stdio,
    time::Duration,
};

use grpc_chat::proto::{MessageType, SubscribeRequest};
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn sigterm_drains_open_streams_and_exits_zero_within_the_grace_period() {
    let mut server = ServerProcess::start(&["--shutdown-grace", "3s"]);
    let mut client = connect(server.addr).await;
    let mut stream = client
        .subscribe_messages(SubscribeRequest {
            user: "Alice".into(),
            ..live("general")
        })
        .await
        .unwrap()
        .into_inner();
    next_events(&mut stream, 1).await;

    server.terminate();
    let notice = next(&mut stream).await;
    assert_eq!(notice.r#type, MessageType::System as i32);
    assert!(notice.content.contains("shutting down"), "{notice:?}");
    assert_status(
        &final_status(&mut stream).await,
        Code::Unavailable,
        &["shutting down"],
    );
    let status = server.wait_exit(Duration::from_secs(3)).await;
    assert!(status.success(), "{status:?}");
}

/// The signal handlers are in place before anything listens: a SIGTERM sent the moment the port
/// accepts drains the server (exit 0) rather than killing it.
#[test]
fn sigterm_the_moment_the_port_accepts_still_drains_and_exits_zero() {
    let addr = free_addr();
    let mut child = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_grpc-chat"))
            .args(["serve", "--listen", &addr.to_string()])
            .args([
                "--ws-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the port never accepted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_exits_zero_even_when_a_client_never_reads() {
    let mut server = ServerProcess::start(&["--shutdown-grace", "1s"]);
    let mut client = connect_small_window(server.addr).await;
    let stuck = subscribe_on(&mut client, live("general")).await;
    flood(&mut client, "general").await;
    let started = std::time::Instant::now();
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(4)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for the grace period"
    );
    drop(stuck);
}

#[test]
fn nonsensical_settings_fail_fast_with_the_expected_form() {
    let (code, _, stderr) = cli(&["serve", "--history", "0"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--history must be at least 1"), "{stderr}");

    let (code, _, stderr) = cli(&["serve", "--listen", "nowhere"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid value 'nowhere' for '--listen <LISTEN>'"),
        "{stderr}"
    );

    let (code, _, stderr) = cli(&["serve", "--chitty-room", "no room"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--chitty-room"), "{stderr}");
    assert!(stderr.contains("may only contain"), "{stderr}");

    let (code, _, stderr) = cli(&["serve", "--shutdown-grace", "soon"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--shutdown-grace"), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = cli(&["serve", "--listen", &addr]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn environment_variables_configure_the_server() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_grpc-chat"))
        .args(["serve"])
        .env("GRPC_CHAT_MAX_CONTENT_BYTES", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--max-content-bytes must be at least 1")
    );
}

#[test]
fn help_documents_every_flag_with_its_environment_variable() {
    let (code, stdout, _) = cli(&["serve", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--listen",
        "--history",
        "--max-rooms",
        "--shutdown-grace",
        "--max-connection-age",
    ] {
        assert!(stdout.contains(flag), "{flag} missing from --help");
    }
    assert!(stdout.contains("[env: GRPC_CHAT_HISTORY=]"), "{stdout}");
}

#[test]
fn client_subcommands_talk_to_a_running_server() {
    let server = ServerProcess::start(&[]);
    let url = server.url();

    let (code, stdout, _) = cli(&["health", "--addr", &url]);
    assert_eq!((code, stdout.trim()), (0, "SERVING"));

    let (code, stdout, stderr) = cli(&[
        "send",
        "--addr",
        &url,
        "-r",
        "general",
        "-u",
        "Alice",
        "hello there",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("sent id=") && stdout.contains("offset=1"),
        "{stdout}"
    );
    let epoch = stdout.trim().rsplit_once("epoch=").unwrap().1.to_owned();
    assert_eq!(epoch.len(), 8, "{stdout}");

    let file = std::env::temp_dir().join(format!("grpc-chat-upload-{}.txt", std::process::id()));
    std::fs::write(&file, "first\n\nsecond\nthird\n").unwrap();
    let (code, stdout, stderr) = cli(&[
        "upload",
        "--addr",
        &url,
        "-r",
        "general",
        "-u",
        "Bob",
        file.to_str().unwrap(),
    ]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "uploaded 3 messages");

    let (code, stdout, stderr) = cli(&[
        "subscribe",
        "--addr",
        &url,
        "-r",
        "general",
        "--last",
        "4",
        "--count",
        "4",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("[general] * Welcome to room general! (epoch {epoch})").as_str(),
            "[general #1] Alice: hello there",
            "[general #2] Bob: first",
            "[general #3] Bob: second",
            "[general #4] Bob: third",
        ]
    );

    let mut chat = std::process::Command::new(env!("CARGO_BIN_EXE_grpc-chat"))
        .args(["chat", "--addr", &url, "-r", "general", "-u", "Carol"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"hi from stdin\nbye\n")
        .unwrap();
    let output = chat.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "[general #5] Carol: Carol joined",
            "[general #6] Carol: hi from stdin",
            "[general #7] Carol: bye"
        ]
    );

    let (code, stdout, stderr) = cli(&["room", "--addr", &url, "-r", "general"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("room general: epoch {epoch}, offsets 1..8")
    );
    let mut present = std::process::Command::new(env!("CARGO_BIN_EXE_grpc-chat"))
        .args(["subscribe", "--addr", &url, "-r", "general", "-u", "Dave"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(present.stdout.take().unwrap()).lines();
    assert!(
        lines
            .next()
            .unwrap()
            .unwrap()
            .contains("Welcome to room general, Dave!")
    );
    let (code, stdout, stderr) = cli(&["room", "--addr", &url, "-r", "general"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("room general: epoch {epoch}, offsets 1..9").as_str(),
            "  Dave (1 session)"
        ]
    );
    present.kill().unwrap();
    present.wait().unwrap();
    // Dave's LEAVE, once the server noticed the client is gone.
    let deadline = std::time::Instant::now() + PATIENCE;
    while cli(&["room", "--addr", &url, "-r", "general"]).1.trim()
        != format!("room general: epoch {epoch}, offsets 1..10")
    {
        assert!(std::time::Instant::now() < deadline, "Dave never left");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stdout, _) = cli(&["room", "--addr", &url, "-r", "elsewhere"]);
    assert_eq!((code, stdout.trim()), (0, "room elsewhere: not held"));

    let (code, stdout, stderr) = cli(&["metrics", "--addr", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.lines().any(
            |line| line.starts_with("grpc_chat_messages_published_total{instance=")
                && line.ends_with(" 10")
        ),
        "7 messages, Carol's LEAVE, Dave's JOIN and LEAVE: {stdout}"
    );

    let (code, _, stderr) = cli(&["send", "--addr", &url, "-r", "bad room", "-u", "Alice", "x"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("room: may only contain"), "{stderr}");
}

#[test]
fn health_fails_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, stderr) = cli(&[
        "health",
        "--addr",
        &format!("http://127.0.0.1:{port}"),
        "--connect-timeout",
        "1s",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn client_output_into_a_closed_pipe_ends_quietly() {
    let server = ServerProcess::start(&[]);
    let mut metrics = std::process::Command::new(env!("CARGO_BIN_EXE_grpc-chat"))
        .args(["metrics", "--addr", &server.url(), "--batches", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufRead::read_line(
        &mut std::io::BufReader::new(metrics.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("grpc_"), "{first}");
    // The reader is gone (as with `| head -1`): the next write fails and the client stops cleanly.
    let output = metrics.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_minted_token_works_with_the_cli_and_a_new_secret_takes_effect_on_sighup() {
    let dir = std::env::temp_dir().join(format!("grpc-chat-cli-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "the first secret, thirty-two bytes or more\n").unwrap();
    let secret = secret.to_str().unwrap();
    // File changes are checked only hourly here, so the reload below is the signal's.
    let server = ServerProcess::start(&[
        "--jwt-hmac-secret-file",
        secret,
        "--jwt-reload-interval",
        "1h",
    ]);
    let url = server.url();
    let mint = |sub: &str| {
        let (code, token, stderr) = cli(&[
            "token",
            "--sub",
            sub,
            "--room",
            "team-*:pub,sub",
            "--secret-file",
            secret,
        ]);
        assert_eq!(code, 0, "{stderr}");
        token.trim().to_owned()
    };
    let send = |token: &str, room: &str| {
        cli(&[
            "send", "--addr", &url, "--token", token, "-r", room, "hello",
        ])
    };
    let alice = mint("alice");
    let (code, out, stderr) = send(&alice, "team-a");
    assert_eq!(code, 0, "{stderr}");
    assert!(out.starts_with("sent id="), "{out}");
    let (code, _, stderr) = cli(&["send", "--addr", &url, "-r", "team-a", "-u", "alice", "hi"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no token"), "{stderr}");
    let (code, _, stderr) = send(&alice, "lobby");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("user alice may not publish to room lobby"),
        "{stderr}"
    );

    std::fs::write(
        dir.join("secret"),
        "the second secret, also thirty-two bytes\n",
    )
    .unwrap();
    server.signal("HUP");
    server.log_line("token keys reloaded").await;
    let (code, _, stderr) = send(&alice, "team-a");
    assert_ne!(code, 0);
    assert!(stderr.contains("bad signature"), "{stderr}");
    let (code, _, stderr) = send(&mint("alice"), "team-a");
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_send_repeated_with_its_client_message_id_is_stored_once() {
    let server = ServerProcess::start(&[]);
    let url = server.url();
    let send = |content: &str| {
        let (code, stdout, stderr) = cli(&[
            "send",
            "--addr",
            &url,
            "-r",
            "general",
            "-u",
            "Alice",
            "--client-message-id",
            "cli-1",
            content,
        ]);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let first = send("hello");
    assert!(first.contains("offset=1"), "{first}");
    assert_eq!(send("hello"), first, "the first acknowledgement");
    // Without an id each send is a message of its own (a fresh id every time).
    for offset in [2, 3] {
        let (code, stdout, stderr) =
            cli(&["send", "--addr", &url, "-r", "general", "-u", "Alice", "x"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(&format!("offset={offset}")), "{stdout}");
    }
    // Nothing listens: the attempts end with the error.
    let (code, _, stderr) = cli(&[
        "send",
        "--addr",
        "http://127.0.0.1:9",
        "-r",
        "general",
        "--attempts",
        "2",
        "x",
    ]);
    assert_ne!(code, 0);
    assert!(!stderr.is_empty());
}

#[test]
fn direct_prints_the_pair_s_room_whichever_of_them_asks() {
    let server = ServerProcess::start(&[]);
    let url = server.url();
    let direct = |user: &str, peer: &str| {
        let (code, stdout, stderr) = cli(&["direct", "--addr", &url, "-u", user, peer]);
        assert_eq!(code, 0, "{stderr}");
        stdout.trim().to_owned()
    };
    let room = direct("alice", "bob");
    assert!(room.starts_with("dm."), "{room}");
    assert_eq!(direct("bob", "alice"), room);
    let (code, stdout, stderr) = cli(&["send", "--addr", &url, "-r", &room, "-u", "alice", "hi"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("offset=1"), "{stdout}");
}

#[test]
fn send_replies_and_subscribe_shows_what_a_reply_answers() {
    let server = ServerProcess::start(&[]);
    let url = server.url();
    let send = |args: &[&str]| {
        let (code, stdout, stderr) =
            cli(&[&["send", "--addr", &url, "-r", "general"], args].concat());
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    send(&["-u", "alice", "which release?"]);
    send(&["-u", "bob", "--reply-to", "1", "1.4"]);
    let (code, stdout, stderr) = cli(&[
        "subscribe",
        "--addr",
        &url,
        "-r",
        "general",
        "--from-offset",
        "1",
        "--count",
        "2",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("[general #2] bob (re #1 alice: which release?): 1.4"),
        "{stdout}"
    );
    let (code, _, stderr) = cli(&[
        "send",
        "--addr",
        &url,
        "-r",
        "general",
        "-u",
        "bob",
        "--reply-to",
        "7",
        "x",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("reply_to"), "{stderr}");
}

#[test]
fn rooms_lists_every_page_of_the_directory() {
    let server = ServerProcess::start(&[]);
    let url = server.url();
    for room in ["general", "random", "support"] {
        let (code, _, stderr) = cli(&["send", "--addr", &url, "-r", room, "-u", "alice", "hi"]);
        assert_eq!(code, 0, "{stderr}");
    }
    let (code, stdout, stderr) = cli(&["rooms", "--addr", &url, "--page-size", "2"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, room) in lines.iter().zip(["general", "random", "support"]) {
        assert!(
            line.starts_with(&format!("{room}: 0 members here, last offset 1 (epoch ")),
            "{line}"
        );
        assert!(!line.ends_with("last message never"), "{line}");
    }
}

#[test]
fn edit_delete_and_react_from_the_command_line_and_follow_them() {
    let server = ServerProcess::start(&[]);
    let url = server.url();
    let run = |args: &[&str]| {
        let (code, stdout, stderr) = cli(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    };
    let on = |command: &'static str, rest: &[&'static str]| {
        let mut args = vec![command, "--addr", &url, "-r", "general"];
        args.extend_from_slice(rest);
        run(&args.iter().map(|a| &**a).collect::<Vec<_>>())
    };
    on("send", &["-u", "alice", "helo"]);
    on("send", &["-u", "bob", "see you"]);
    let edited = on("edit", &["-u", "alice", "--offset", "1", "hello"]);
    assert!(
        edited.starts_with("changed: stored at offset 3"),
        "{edited}"
    );
    on("react", &["-u", "bob", "--offset", "1", "👍"]);
    let again = on("react", &["-u", "bob", "--offset", "1", "👍"]);
    assert_eq!(again.trim(), "nothing to change");
    on("delete", &["-u", "bob", "--offset", "2"]);
    let (code, _, stderr) = cli(&[
        "edit", "--addr", &url, "-r", "general", "-u", "bob", "--offset", "1", "mine",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("only its author may"), "{stderr}");

    let followed = on(
        "subscribe",
        &["--from-offset", "1", "--changes", "--count", "5"],
    );
    let lines: Vec<&str> = followed.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "[general #1] alice: hello (edited) [👍 1]",
            "[general #2] bob: (deleted)",
            "[general #3] alice edited #1 (version 1): hello",
            "[general #4] bob reacted 👍 to #1",
            "[general #5] bob deleted #2 of bob",
        ]
    );
    // Without --changes, the newest text and nothing else.
    let plain = on("subscribe", &["--from-offset", "1", "--count", "1"]);
    assert_eq!(
        plain.lines().nth(1),
        Some("[general #1] alice: hello (edited) [👍 1]")
    );
}
