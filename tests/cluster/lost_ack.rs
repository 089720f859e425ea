//! An acknowledgement lost between NATS and a replica: the replica learns from the room's last
//! stored message that its append landed, and the client hears "sent" for one stored message.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
};

use crate::{helpers::*, publish_until_acknowledged, replica_at};

/// A proxy in front of NATS that passes everything but the replies to the first `steal`
/// publishes on room subjects.
struct AckThief {
    addr: SocketAddr,
    stolen: Arc<AtomicUsize>,
}

/// Reply subjects of room publishes whose answers are to be dropped, and how many to drop.
struct Loot {
    replies: Mutex<HashSet<String>>,
    left: AtomicUsize,
}

impl AckThief {
    async fn start(upstream: SocketAddr, steal: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stolen = Arc::new(AtomicUsize::new(0));
        let loot = Arc::new(Loot {
            replies: Mutex::new(HashSet::new()),
            left: AtomicUsize::new(steal),
        });
        let counted = Arc::clone(&stolen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream).await.unwrap();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(client_to_server(
                    client_read,
                    server_write,
                    Arc::clone(&loot),
                ));
                tokio::spawn(server_to_client(
                    server_read,
                    client_write,
                    Arc::clone(&loot),
                    Arc::clone(&counted),
                ));
            }
        });
        Self { addr, stolen }
    }
}

/// The payload length a `PUB`/`HPUB`/`MSG`/`HMSG` line announces (its last field).
fn payload_length(line: &str) -> usize {
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// Reads the payload (and its CRLF) that follows a line announcing `length` bytes.
async fn payload(reader: &mut BufReader<OwnedReadHalf>, length: usize) -> Option<Vec<u8>> {
    let mut bytes = vec![0; length + 2];
    reader.read_exact(&mut bytes).await.ok()?;
    Some(bytes)
}

async fn client_to_server(read: OwnedReadHalf, mut write: OwnedWriteHalf, loot: Arc<Loot>) {
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let mut out = line.as_bytes().to_vec();
        if matches!(fields.first(), Some(&"PUB") | Some(&"HPUB")) {
            // HPUB subject [reply] header-length total-length; PUB subject [reply] length.
            let with_reply = fields.len() == if fields[0] == "HPUB" { 5 } else { 4 };
            if with_reply && fields[1].contains(".room.") {
                loot.replies.lock().unwrap().insert(fields[2].to_owned());
            }
            let Some(body) = payload(&mut reader, payload_length(&line)).await else {
                return;
            };
            out.extend(body);
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn server_to_client(
    read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    loot: Arc<Loot>,
    stolen: Arc<AtomicUsize>,
) {
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let mut out = line.as_bytes().to_vec();
        if matches!(fields.first(), Some(&"MSG") | Some(&"HMSG")) {
            let Some(body) = payload(&mut reader, payload_length(&line)).await else {
                return;
            };
            let subject = fields[1];
            let steal = loot.replies.lock().unwrap().remove(subject)
                && loot
                    .left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok();
            if steal {
                stolen.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            out.extend(body);
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_is_resolved_from_the_stream_and_stores_nothing_twice() {
    let nats = NatsServer::start();
    let upstream: SocketAddr = nats.url.trim_start_matches("nats://").parse().unwrap();
    let thief = AckThief::start(upstream, 1).await;
    let server = replica_at(
        &format!("nats://{}", thief.addr),
        &["--nats-request-timeout", "1s"],
    );
    let mut client = connect(server.addr).await;
    // Retried until the engine has set up its stream.
    let first = publish_until_acknowledged(&mut client, "once", PATIENCE).await;
    assert_eq!(
        thief.stolen.load(Ordering::SeqCst),
        1,
        "the acknowledgement was dropped"
    );
    assert_eq!(first.offset, 1);
    let second = client
        .send_message(send_request("general", "Alice", "twice?"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.offset, 2, "the first one is stored once");
    let mut replay = replay_from(&mut client, "general", 1).await;
    let stored = next_events(&mut replay, 2).await;
    assert_eq!(
        stored
            .iter()
            .map(|m| (m.id.as_str(), m.content.as_str()))
            .collect::<Vec<_>>(),
        [
            (first.message_id.as_str(), "once"),
            (second.message_id.as_str(), "twice?")
        ]
    );
}
