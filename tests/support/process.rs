//! External processes: the project's tools, the server binary, the command line.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use super::PATIENCE;

/// An external tool, from PATH or the project's tool directory; missing is a failure.
pub fn tool(name: &str) -> PathBuf {
    let project_tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(project_tools)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run `make test`, which installs the test tools")
        })
}

/// A child process that is killed and reaped when this is dropped, even by a failing test.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `grpc-chat` binary running as a child process.
pub struct ServerProcess {
    pub child: Reaped,
    pub addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Log lines after the "listening" one.
    pub log: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Runs `grpc-chat serve` on free loopback ports with `args` and waits until it listens.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`ServerProcess::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_grpc-chat")), args, env)
    }

    /// The release build of the server (`make test` builds it and names it in
    /// `GRPC_CHAT_RELEASE_BIN`), for figures that a debug build would distort.
    pub fn start_release(args: &[&str]) -> Self {
        Self::start_command(Command::new(release_binary()), args, &[])
    }

    /// The server with at most `nofile` open files (set by `prlimit`, so the process's own limit
    /// is exactly that: it cannot raise it).
    pub fn start_with_fd_limit(nofile: u64, args: &[&str]) -> Self {
        let mut command = Command::new(tool("prlimit"));
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_grpc-chat"));
        Self::start_command(command, args, &[])
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn start_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Reaped(
            command
                .args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--admin-listen",
                    "127.0.0.1:0",
                    "--ws-listen",
                    "127.0.0.1:0",
                ])
                .args(args)
                .env("RUST_LOG", "info")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (lines, log) = mpsc::channel();
        let stderr = BufReader::new(child.0.stderr.take().unwrap());
        // Keeps draining after the address is known, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let (addr, ws_addr, admin_addr) = loop {
            let line = log
                .recv_timeout(PATIENCE)
                .expect("server did not report its address");
            if line.contains("listening") {
                break (
                    log_field(&line, "addr"),
                    log_field(&line, "ws_addr"),
                    log_field(&line, "admin_addr"),
                );
            }
        };
        Self {
            child,
            addr,
            ws_addr,
            admin_addr,
            log,
        }
    }

    /// `http://ADDR` of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`HUP`, `TERM`...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for a log line containing `phrase` and returns it.
    pub async fn log_line(&self, phrase: &str) -> String {
        super::within(&format!("a log line with {phrase:?}"), async {
            loop {
                match self.log.try_recv() {
                    Ok(line) if line.contains(phrase) => return line,
                    Ok(_) => continue,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
    }

    /// Waits for the process to exit, failing after `limit`. Asynchronous, so that the test's
    /// own client connections keep being served meanwhile (a client that stops answering the
    /// server's PING holds the server's graceful close for its whole grace period).
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() >= deadline {
                let log: Vec<String> = self.log.try_iter().collect();
                panic!(
                    "server did not exit within {limit:?}; its log since it listened:\n{}",
                    log.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The address logged as `key` in a text (`key=value`) or JSON log line.
fn log_field(line: &str, key: &str) -> SocketAddr {
    let value = if line.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        json["fields"][key].as_str().unwrap().to_owned()
    } else {
        let start = line.find(&format!(" {key}=")).unwrap() + key.len() + 2;
        line[start..].split_whitespace().next().unwrap().to_owned()
    };
    value.parse().unwrap()
}

/// The release build of `grpc-chat`, which `make test` builds before the tests.
pub fn release_binary() -> PathBuf {
    let path = std::env::var_os("GRPC_CHAT_RELEASE_BIN").unwrap_or_else(|| {
        panic!("GRPC_CHAT_RELEASE_BIN is not set: run `make test`, which builds the release binary")
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{} does not exist: run `make test`",
        path.display()
    );
    path
}

/// CPU seconds (user and system) the process `pid` has used, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Resident memory of the process `pid`, in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

/// Runs the `grpc-chat` binary with `args` and returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_grpc-chat"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    // A command that never ends fails its test instead of holding the suite.
    let output = match finished.recv_timeout(CLI_DEADLINE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("grpc-chat {args:?} did not end within {CLI_DEADLINE:?}");
        }
    };
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// How long one command of [`cli`] may take.
const CLI_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// A free port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
