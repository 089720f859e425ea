//! Real X.509 certificates made by openssl for each test: a CA, a server certificate for
//! `localhost` and 127.0.0.1 signed by it, and a client certificate signed by it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
};

/// A CA and what it signed, in a directory of their own.
pub struct Certs {
    pub dir: PathBuf,
    /// The CA certificate clients verify the server with (and the server verifies clients).
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate and key, for mTLS.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Certs {
    /// A new CA named `name` and its certificates.
    pub fn generate(name: &str) -> Self {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "grpc-chat-certs-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &dir,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat(),
        );
        for (who, subject, extension) in [
            (
                "server",
                "/CN=localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
            ),
            ("client", "/CN=alice", "extendedKeyUsage=clientAuth"),
        ] {
            let (key, csr, cert, ext) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
                format!("{who}.ext"),
            );
            std::fs::write(dir.join(&ext), extension).unwrap();
            openssl(
                &dir,
                &[
                    &["req"][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr, "-subj", subject],
                ]
                .concat(),
            );
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &cert,
                    "-extfile",
                    &ext,
                ],
            );
        }
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            dir,
        }
    }

    /// Settings serving with the server certificate; clients verified by this CA if `mtls`.
    pub fn options(&self, mtls: bool) -> grpc_chat::net::tls::TlsOptions {
        grpc_chat::net::tls::TlsOptions {
            tls_cert: Some(self.server_cert.clone()),
            tls_key: Some(self.server_key.clone()),
            tls_client_ca: mtls.then(|| self.ca.clone()),
            tls_reload_interval: std::time::Duration::from_millis(100),
        }
    }
}

/// Copies `from` over `to` in one rename, as a secret mount is swapped.
pub fn replace_file(from: &Path, to: &Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(staged, to).unwrap();
}
