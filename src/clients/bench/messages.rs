//! The benchmark's messages: numbered and timestamped by their publisher, and what a subscriber
//! saw of them (every door's subscribers count the same way).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::report::latency_histogram;

/// Latency is recorded for every this-many-th message of each publisher, by every subscriber:
/// recording all of them into a histogram per subscriber cost the generator more than reading
/// the messages. Which messages are sampled does not depend on timing, so the percentiles are not
/// biased.
const LATENCY_SAMPLING: usize = 8;

/// What one subscriber saw.
pub struct Seen {
    pub unique: u64,
    pub duplicates: u64,
    pub latencies: Histogram<u64>,
    pub failed: bool,
    /// Per publisher, the last sequence number received: each publisher's messages arrive in
    /// order.
    last: Vec<Option<usize>>,
}

impl Seen {
    /// Nothing seen yet of `publishers`.
    pub fn new(publishers: usize) -> Self {
        Self {
            unique: 0,
            duplicates: 0,
            latencies: latency_histogram(),
            failed: false,
            last: vec![None; publishers],
        }
    }

    /// Counts a delivered message's content (what is not a benchmark message is skipped).
    pub fn observe(&mut self, content: &[u8]) {
        let Some((publisher, seq, sent)) = parse(content) else {
            return;
        };
        let Some(previous) = self.last.get_mut(publisher) else {
            return;
        };
        if previous.is_some_and(|previous| seq <= previous) {
            self.duplicates += 1;
            return;
        }
        *previous = Some(seq);
        self.unique += 1;
        if seq % LATENCY_SAMPLING == 0 {
            self.latencies
                .saturating_record(now_nanos().saturating_sub(sent) / 1_000);
        }
    }
}

pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// The room of publisher `publisher`'s message `seq`.
pub fn room_of(publisher: usize, seq: usize, messages: usize, rooms: usize) -> usize {
    (publisher * messages + seq) % rooms
}

/// How publisher `publisher`'s message `seq` starts: who, which, and when it was sent.
pub fn header(publisher: usize, seq: usize) -> String {
    format!("p{publisher}:{seq}:{}:", now_nanos())
}

/// Parses `p{publisher}:{seq}:{nanos}:`.
pub fn parse(content: &[u8]) -> Option<(usize, usize, u64)> {
    let text = std::str::from_utf8(content.get(..content.len().min(64))?).ok()?;
    let mut parts = text.strip_prefix('p')?.splitn(4, ':');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// What a publisher reports: its errors, and its acknowledgement latencies (µs).
pub type Published = (u64, Histogram<u64>);

/// One timer for a whole stream rather than one per message: when it fires, the stream has gone
/// idle only if nothing arrived since it was last set, so an idle stream is noticed after one to
/// two timeouts.
pub struct IdleWatch {
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    arrived: bool,
}

impl IdleWatch {
    /// Watching from now, for `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            idle: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            arrived: false,
        }
    }

    /// What `next` yields, or `None` if the stream went idle first.
    pub async fn next<T>(&mut self, next: impl std::future::Future<Output = T>) -> Option<T> {
        let mut next = std::pin::pin!(next);
        loop {
            tokio::select! {
                biased;
                item = &mut next => {
                    self.arrived = true;
                    return Some(item);
                }
                () = self.idle.as_mut() => {
                    if !std::mem::take(&mut self.arrived) {
                        return None;
                    }
                    self.idle.as_mut().reset(tokio::time::Instant::now() + self.timeout);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_headers_round_trip() {
        let content = super::super::padded("p3:17:123456789:", 64);
        assert_eq!(content.len(), 64);
        assert_eq!(parse(content.as_bytes()), Some((3, 17, 123_456_789)));
        assert_eq!(parse(b"not a bench message"), None);
    }

    #[test]
    fn every_room_gets_its_share_of_each_publishers_messages() {
        let (publishers, messages, rooms) = (3, 10, 4);
        let mut per_room = vec![0; rooms];
        for publisher in 0..publishers {
            for seq in 0..messages {
                per_room[room_of(publisher, seq, messages, rooms)] += 1;
            }
        }
        assert_eq!(per_room.iter().sum::<usize>(), publishers * messages);
        assert!(per_room.iter().all(|&count| count >= 7), "{per_room:?}");
    }
}
