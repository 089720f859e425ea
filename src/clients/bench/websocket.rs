//! The fan-out scenarios over WebSocket rooms (`/ws?roomCode=`, the seed's JSON frames): every
//! subscriber and publisher on its own socket, as browsers are. It speaks only what the seed's
//! server speaks, so it measures that server too.
//!
//! A room has no welcome on this door, so readiness is observed: until every subscriber has
//! received something, a warm-up socket per room sends warm-up frames. A publisher's message is
//! acknowledged when the room echoes it back on the publisher's own socket (the room sends every
//! message to every socket in it, the sender's included).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::{
    net::TcpStream,
    sync::{Barrier, Notify},
    time::MissedTickBehavior,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, Utf8Bytes},
};
use tokio_util::sync::CancellationToken;
use tungstenite::handshake::client::Request;

use grpc_chat::text_frame::TextFrame;

use super::{
    messages::{IdleWatch, Published, Seen, header, now_nanos, parse, room_of},
    padded,
    report::latency_histogram,
};

/// A client WebSocket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How often warm-up frames go to each room until every subscriber heard one. Not much more
/// often: a server whose room delivers slowly (the seed's, at 10,000 sockets) would build a
/// backlog of warm-ups that delays the run.
const WARM_UP_INTERVAL: Duration = Duration::from_millis(250);
/// How long a publisher socket waits to hear its warm-up frame before sending another.
const WARM_UP_ECHO_WAIT: Duration = Duration::from_secs(1);
/// Content of a warm-up frame (not a benchmark message: subscribers skip it).
const WARM_UP: &str = "warm-up";

/// The request for room `room` of the server at `ws_addr` (HOST:PORT), offering `token`.
pub fn room_request(ws_addr: &str, room: usize, token: Option<&str>) -> anyhow::Result<Request> {
    crate::clients::client::websocket_request(
        &format!("ws://{ws_addr}/ws?roomCode=bench-{room}"),
        token,
    )
}

async fn open(request: &Request) -> anyhow::Result<Socket> {
    let (socket, _) = connect_async(request.clone())
        .await
        .with_context(|| format!("cannot open {}", request.uri()))?;
    Ok(socket)
}

/// The room frame from `author` saying `content`.
fn text(author: &str, content: &str) -> Message {
    Message::Text(Utf8Bytes::from(TextFrame::encode(author, content, None)))
}

/// Sends warm-up frames to every room (one socket each) until `done` is cancelled.
pub async fn warm_up(requests: Vec<Request>, done: CancellationToken) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(requests.len());
    for request in &requests {
        sockets.push(open(request).await?);
    }
    let frame = text("warm-up", WARM_UP);
    let mut ticks = tokio::time::interval(WARM_UP_INTERVAL);
    loop {
        tokio::select! {
            () = done.cancelled() => return Ok(()),
            _ = ticks.tick() => {
                for socket in &mut sockets {
                    socket.send(frame.clone()).await?;
                    // What the room sends back is read and dropped, so the socket never fills.
                    while let Some(Some(Ok(_))) = futures_util::FutureExt::now_or_never(socket.next()) {}
                }
            }
        }
    }
}

/// One subscriber socket: opens, waits for its first frame (warm-up), signals `ready`, then
/// reads until it has `expected` messages, the socket ends, or nothing arrives for
/// `idle_timeout`.
pub async fn subscribe(
    request: Request,
    expected: u64,
    publishers: usize,
    idle_timeout: Duration,
    ready: Arc<Barrier>,
) -> anyhow::Result<Seen> {
    let mut socket = open(&request).await;
    let heard = match &mut socket {
        Ok(socket) => tokio::time::timeout(idle_timeout, socket.next())
            .await
            .is_ok_and(|frame| matches!(frame, Some(Ok(_)))),
        Err(_) => false,
    };
    ready.wait().await;
    let mut seen = Seen::new(publishers);
    let Ok(mut socket) = socket else {
        seen.failed = true;
        return Ok(seen);
    };
    seen.failed = !heard;
    let mut watch = IdleWatch::new(idle_timeout);
    while seen.unique < expected && !seen.failed {
        let Some(next) = watch.next(socket.next()).await else {
            seen.failed = true;
            break;
        };
        match next {
            Some(Ok(Message::Text(frame))) => {
                if let Ok(frame) = TextFrame::parse(frame.as_str()) {
                    seen.observe(frame.content.as_bytes());
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => seen.failed = true,
            Some(Ok(_)) => {}
        }
    }
    Ok(seen)
}

/// What a publisher's own sockets heard back.
#[derive(Default)]
struct Echoes {
    /// One more than the highest sequence number echoed (0: none yet).
    next: AtomicU64,
    arrived: Notify,
}

impl Echoes {
    /// Waits up to `timeout` for message `seq` (and so every one before it) to come back; true
    /// if it did.
    async fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let echoed = async {
            loop {
                let arrived = self.arrived.notified();
                if self.next.load(Ordering::Acquire) > seq {
                    return;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(timeout, echoed).await.is_ok()
    }
}

/// The settings of one publisher.
pub struct Publisher {
    pub index: usize,
    pub messages: usize,
    pub size: usize,
    pub rooms: usize,
    /// Messages per second; 0: each once the previous one is echoed.
    pub rate: u32,
}

/// A publisher's sockets, one per room, each in its room: it heard its own warm-up frame.
pub async fn publisher_sockets(
    requests: &[Request],
    idle_timeout: Duration,
) -> anyhow::Result<Vec<Socket>> {
    let frame = text("warm-up", WARM_UP);
    let mut sockets = Vec::with_capacity(requests.len());
    for request in requests {
        let mut socket = open(request).await?;
        let deadline = tokio::time::Instant::now() + idle_timeout;
        loop {
            socket.send(frame.clone()).await?;
            if let Ok(Some(Ok(_))) = tokio::time::timeout(WARM_UP_ECHO_WAIT, socket.next()).await {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "a publisher socket heard nothing from {}",
                request.uri()
            );
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Publishes over `sockets` (from [`publisher_sockets`]); returns the errors and the send→echo
/// latencies.
pub async fn publish(
    publisher: Publisher,
    sockets: Vec<Socket>,
    idle_timeout: Duration,
) -> anyhow::Result<Published> {
    let echoes = Arc::new(Echoes::default());
    let stop = CancellationToken::new();
    let mut senders = Vec::with_capacity(sockets.len());
    let mut readers = Vec::with_capacity(sockets.len());
    for socket in sockets {
        let (sink, stream) = socket.split();
        senders.push(sink);
        readers.push(tokio::spawn(read_echoes(
            stream,
            publisher.index,
            Arc::clone(&echoes),
            stop.clone(),
        )));
    }
    let author = format!("publisher-{}", publisher.index);
    let mut pacing = (publisher.rate > 0).then(|| {
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / publisher.rate);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        ticks
    });
    let mut errors = 0u64;
    for seq in 0..publisher.messages {
        if let Some(ticks) = pacing.as_mut() {
            ticks.tick().await;
        }
        let room = room_of(publisher.index, seq, publisher.messages, publisher.rooms);
        let content = padded(&header(publisher.index, seq), publisher.size);
        if senders[room].send(text(&author, &content)).await.is_err() {
            errors += 1;
            continue;
        }
        // Saturated: the next one once this one came back.
        if pacing.is_none() && !echoes.wait_for(seq as u64, idle_timeout).await {
            errors += 1;
        }
    }
    // Paced: every message is acknowledged by its echo too. Closing the sockets before would
    // also reset them, and the server would lose the frames it had not read yet.
    if let Some(last) = (publisher.messages as u64).checked_sub(1)
        && pacing.is_some()
        && !echoes.wait_for(last, idle_timeout).await
    {
        errors += publisher.messages as u64 - echoes.next.load(Ordering::Acquire);
    }
    stop.cancel();
    let mut acks = latency_histogram();
    for reader in readers {
        acks.add(reader.await?)?;
    }
    Ok((errors, acks))
}

/// Reads a publisher socket until `stop`, noting the publisher's own messages coming back and
/// how long after they were sent (µs).
async fn read_echoes(
    mut stream: futures_util::stream::SplitStream<Socket>,
    publisher: usize,
    echoes: Arc<Echoes>,
    stop: CancellationToken,
) -> Histogram<u64> {
    let mut latencies = latency_histogram();
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => return latencies,
            frame = stream.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return latencies,
        };
        let Ok(frame) = TextFrame::parse(text.as_str()) else {
            continue;
        };
        if let Some((from, seq, sent)) = parse(frame.content.as_bytes())
            && from == publisher
        {
            latencies.saturating_record((now_nanos().saturating_sub(sent) / 1_000).max(1));
            echoes.next.fetch_max(seq as u64 + 1, Ordering::AcqRel);
            echoes.arrived.notify_waiters();
        }
    }
}
