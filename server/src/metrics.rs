//! [`Metrics`]: what the node counts, and its Prometheus text form for `GET /metrics`.
//!
//! Plain atomics and one fixed-bucket histogram: counting costs a relaxed add on the hot
//! path, and rendering reads them all once per scrape.

use quiver_proto::ErrorCode;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the flush-latency histogram buckets.
const FLUSH_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Error codes are small numbers; one counter each (0 unused).
const CODES: usize = 32;

/// What kind of request one node made to another.
#[derive(Clone, Copy, Debug)]
pub enum MeshKind {
    /// A relayed conversation stream.
    Conversation = 0,
    /// A receipt for a sender homed on the peer.
    Receipt = 1,
    /// A device attached to its feed on the peer.
    Attach = 2,
    /// An upload or download relayed to the blob owner's home node.
    File = 3,
    /// A history page read from the user's home node.
    History = 4,
}

/// Counters (`_total`, only grow) and gauges (go up and down) of one node.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions that passed Hello since start.
    pub sessions_opened: AtomicU64,
    /// Sessions open now.
    pub sessions_open: AtomicU64,
    /// Entries pushed to devices and not yet acknowledged, over all feeds on this node.
    /// Bounded by `push_window` per device, however slow the devices.
    pub push_backlog: AtomicU64,
    /// Chat messages refused for going over a connection's rate limit.
    pub rate_limited: AtomicU64,
    /// Conversation streams open now, over all connections.
    pub open_conversations: AtomicU64,
    /// Chats stored in inboxes kept here (retries that found their first copy excluded).
    pub chats_stored: AtomicU64,
    /// Datagrams received from clients (typing, presence).
    pub datagrams_in: AtomicU64,
    /// Datagrams sent to clients.
    pub datagrams_out: AtomicU64,
    /// Datagrams dropped: too large, over the rate, or not decodable.
    pub datagrams_dropped: AtomicU64,
    /// Notifications the push gateway accepted.
    pub push_sent: AtomicU64,
    /// Requests to the push gateway tried again (after a 5xx, a timeout, no connection).
    pub push_retried: AtomicU64,
    /// Notifications dropped: the notifier's queue full, retries spent,
    /// or refused by the gateway.
    pub push_dropped: AtomicU64,
    /// Push targets the gateway rejected (and the node forgot).
    pub push_rejected: AtomicU64,
    /// Group chats not notified to a member who muted the group (counted when a device
    /// of theirs was away with a target, so would have been told).
    pub push_muted: AtomicU64,
    /// Receipts stored in inboxes kept here.
    pub receipts_stored: AtomicU64,
    /// Inbox entries handed to devices (directly or through a mesh attachment).
    pub entries_pushed: AtomicU64,
    /// New acknowledgements from devices.
    pub acks: AtomicU64,
    /// Sealed file bytes received into this node's blob store.
    pub file_bytes_received: AtomicU64,
    /// Sealed file bytes sent out of this node's blob store.
    pub file_bytes_sent: AtomicU64,
    /// Blobs and abandoned uploads removed by collection.
    pub blobs_collected: AtomicU64,
    /// Inbox entries removed by retention.
    pub entries_expired: AtomicU64,
    /// Inbox log segment files removed by retention.
    pub segments_removed: AtomicU64,
    /// Time retention spent removing segments (reading them, saving floors, updating the
    /// index), in microseconds.
    pub expire_micros: AtomicU64,
    /// HTTPS connections open now.
    pub http_open: AtomicU64,
    /// HTTPS connections closed at once for going over a connection cap.
    pub http_refused: AtomicU64,
    /// Logins and registrations answered 503 because password hashing was full.
    pub hashing_busy: AtomicU64,
    /// QUIC handshakes in progress now.
    pub handshakes: AtomicU64,
    /// QUIC connection attempts refused, or asked to validate their address, for going
    /// over the cap on handshakes in progress.
    pub handshakes_refused: AtomicU64,
    /// QUIC handshakes that did not finish within the handshake timeout.
    pub handshakes_timed_out: AtomicU64,
    /// Requests this node made to mesh peers, by [`MeshKind`].
    mesh_requests: [AtomicU64; 5],
    /// Refusals and closes the node sent, by error code.
    errors: [AtomicU64; CODES],
    /// Storage flushes by duration: one count per bucket of [`FLUSH_BUCKETS`], then +Inf.
    flush_buckets: [AtomicU64; FLUSH_BUCKETS.len() + 1],
    flush_micros: AtomicU64,
}

/// Figures read when `/metrics` is scraped, rather than counted as things happen.
#[derive(Debug, Default)]
pub struct Scraped {
    /// Transport figures of the live connections.
    pub quic: QuicFigures,
    /// Bytes of the inbox log on disk, from its oldest segment to its end.
    pub inbox_log_bytes: u64,
    /// Inbox log segment files, the one being written included.
    pub inbox_segments: u64,
    /// TCP carrier tunnels open now.
    pub tunnels_open: u64,
}

/// Transport figures of the connections open now, from quinn.
#[derive(Debug, Default)]
pub struct QuicFigures {
    /// Connections measured.
    pub connections: u64,
    /// Sum and maximum of their smoothed round-trip times, in seconds.
    pub rtt_sum: f64,
    /// The largest smoothed round-trip time, in seconds.
    pub rtt_max: f64,
    /// Packets they sent, and of those declared lost.
    pub sent_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
}

impl QuicFigures {
    /// Adds one connection's statistics.
    pub fn add(&mut self, stats: &quinn::ConnectionStats) {
        let rtt = stats.path.rtt.as_secs_f64();
        self.connections += 1;
        self.rtt_sum += rtt;
        self.rtt_max = self.rtt_max.max(rtt);
        self.sent_packets += stats.path.sent_packets;
        self.lost_packets += stats.path.lost_packets;
    }
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// The node sent `code` (a refused request, a closed stream or connection).
    pub fn error(&self, code: ErrorCode) {
        if let Some(counter) = self.errors.get(code.to_u32() as usize) {
            add(counter);
        }
    }

    /// This node asked a peer for `kind`.
    pub fn mesh_request(&self, kind: MeshKind) {
        add(&self.mesh_requests[kind as usize]);
    }

    /// A storage flush took `elapsed`.
    pub fn flush(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = FLUSH_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(FLUSH_BUCKETS.len());
        add(&self.flush_buckets[bucket]);
        self.flush_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric, with what was read at this
    /// scrape (`scraped`).
    pub fn render(&self, scraped: &Scraped) -> String {
        let quic = &scraped.quic;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "quiver_sessions_opened_total",
            "counter",
            "Sessions that passed Hello.",
            get(&self.sessions_opened).to_string(),
        );
        for (name, kind, help, value) in [
            (
                "quiver_http_connections_open",
                "gauge",
                "HTTPS connections open now.",
                &self.http_open,
            ),
            (
                "quiver_http_connections_refused_total",
                "counter",
                "HTTPS connections closed at once over a connection cap.",
                &self.http_refused,
            ),
            (
                "quiver_hashing_busy_total",
                "counter",
                "Logins and registrations answered 503: hashing full.",
                &self.hashing_busy,
            ),
            (
                "quiver_handshakes_in_progress",
                "gauge",
                "QUIC handshakes in progress now.",
                &self.handshakes,
            ),
            (
                "quiver_handshakes_refused_total",
                "counter",
                "QUIC connection attempts refused or retried over the handshake cap.",
                &self.handshakes_refused,
            ),
            (
                "quiver_handshakes_timed_out_total",
                "counter",
                "QUIC handshakes that did not finish in time.",
                &self.handshakes_timed_out,
            ),
        ] {
            one(name, kind, help, get(value).to_string());
        }
        one(
            "quiver_sessions_open",
            "gauge",
            "Sessions open now.",
            get(&self.sessions_open).to_string(),
        );
        one(
            "quiver_conversations_open",
            "gauge",
            "Conversation streams open now.",
            get(&self.open_conversations).to_string(),
        );
        one(
            "quiver_push_backlog",
            "gauge",
            "Entries pushed and not yet acknowledged.",
            get(&self.push_backlog).to_string(),
        );
        one(
            "quiver_rate_limited_total",
            "counter",
            "Chats refused over a connection's rate limit.",
            get(&self.rate_limited).to_string(),
        );
        for (name, help, counter) in [
            (
                "quiver_datagrams_in_total",
                "Datagrams received from clients.",
                &self.datagrams_in,
            ),
            (
                "quiver_datagrams_out_total",
                "Datagrams sent to clients.",
                &self.datagrams_out,
            ),
            (
                "quiver_datagrams_dropped_total",
                "Datagrams dropped: too large, over the rate, undecodable.",
                &self.datagrams_dropped,
            ),
            (
                "quiver_push_sent_total",
                "Notifications the push gateway accepted.",
                &self.push_sent,
            ),
            (
                "quiver_push_retried_total",
                "Push gateway requests tried again.",
                &self.push_retried,
            ),
            (
                "quiver_push_dropped_total",
                "Notifications dropped (queue full, retries spent, refused).",
                &self.push_dropped,
            ),
            (
                "quiver_push_rejected_total",
                "Push targets the gateway rejected.",
                &self.push_rejected,
            ),
            (
                "quiver_push_muted_total",
                "Group chats not notified to a member who muted the group.",
                &self.push_muted,
            ),
        ] {
            one(name, "counter", help, get(counter).to_string());
        }
        one(
            "quiver_chats_stored_total",
            "counter",
            "Chats appended to inboxes kept here.",
            get(&self.chats_stored).to_string(),
        );
        one(
            "quiver_receipts_stored_total",
            "counter",
            "Receipts appended to inboxes kept here.",
            get(&self.receipts_stored).to_string(),
        );
        one(
            "quiver_entries_pushed_total",
            "counter",
            "Inbox entries handed to devices.",
            get(&self.entries_pushed).to_string(),
        );
        one(
            "quiver_acks_total",
            "counter",
            "New acknowledgements from devices.",
            get(&self.acks).to_string(),
        );
        one(
            "quiver_file_bytes_received_total",
            "counter",
            "Sealed file bytes received into the blob store.",
            get(&self.file_bytes_received).to_string(),
        );
        one(
            "quiver_file_bytes_sent_total",
            "counter",
            "Sealed file bytes sent from the blob store.",
            get(&self.file_bytes_sent).to_string(),
        );
        one(
            "quiver_blobs_collected_total",
            "counter",
            "Blobs and abandoned uploads removed.",
            get(&self.blobs_collected).to_string(),
        );
        one(
            "quiver_inbox_entries_expired_total",
            "counter",
            "Inbox entries removed by retention, delivered or not.",
            get(&self.entries_expired).to_string(),
        );
        one(
            "quiver_inbox_segments_removed_total",
            "counter",
            "Inbox log segment files removed by retention.",
            get(&self.segments_removed).to_string(),
        );
        one(
            "quiver_inbox_expire_seconds_total",
            "counter",
            "Time spent removing inbox segments past retention.",
            (get(&self.expire_micros) as f64 / 1e6).to_string(),
        );
        one(
            "quiver_inbox_log_bytes",
            "gauge",
            "Bytes of the inbox log on disk, from its oldest segment to its end.",
            scraped.inbox_log_bytes.to_string(),
        );
        one(
            "quiver_inbox_segments",
            "gauge",
            "Inbox log segment files, the one being written included.",
            scraped.inbox_segments.to_string(),
        );
        one(
            "quiver_tcp_tunnels_open",
            "gauge",
            "TCP carrier tunnels open now (clients whose network blocks UDP).",
            scraped.tunnels_open.to_string(),
        );
        one(
            "quiver_quic_connections",
            "gauge",
            "Client connections measured for the QUIC figures.",
            quic.connections.to_string(),
        );
        let mean = if quic.connections == 0 {
            0.0
        } else {
            quic.rtt_sum / quic.connections as f64
        };
        one(
            "quiver_quic_rtt_mean_seconds",
            "gauge",
            "Mean smoothed RTT of open client connections.",
            mean.to_string(),
        );
        one(
            "quiver_quic_rtt_max_seconds",
            "gauge",
            "Largest smoothed RTT of open client connections.",
            quic.rtt_max.to_string(),
        );
        one(
            "quiver_quic_sent_packets",
            "gauge",
            "Packets sent on open client connections.",
            quic.sent_packets.to_string(),
        );
        one(
            "quiver_quic_lost_packets",
            "gauge",
            "Packets lost on open client connections.",
            quic.lost_packets.to_string(),
        );

        let _ = writeln!(out, "# HELP quiver_mesh_requests_total Requests this node made to mesh peers.\n# TYPE quiver_mesh_requests_total counter");
        for (kind, counter) in ["conversation", "receipt", "attach", "file", "history"]
            .iter()
            .zip(&self.mesh_requests)
        {
            let _ = writeln!(
                out,
                "quiver_mesh_requests_total{{kind=\"{kind}\"}} {}",
                get(counter)
            );
        }
        let _ = writeln!(out, "# HELP quiver_errors_total Refusals and closes the node sent, by code.\n# TYPE quiver_errors_total counter");
        for (n, counter) in self.errors.iter().enumerate() {
            if let Some(code) = ErrorCode::from_u32(n as u32) {
                let _ = writeln!(
                    out,
                    "quiver_errors_total{{code=\"{code:?}\"}} {}",
                    get(counter)
                );
            }
        }
        let _ = writeln!(out, "# HELP quiver_flush_seconds Storage flush (fsync) latency.\n# TYPE quiver_flush_seconds histogram");
        let mut cumulative = 0;
        for (bound, counter) in FLUSH_BUCKETS.iter().zip(&self.flush_buckets) {
            cumulative += get(counter);
            let _ = writeln!(
                out,
                "quiver_flush_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += get(&self.flush_buckets[FLUSH_BUCKETS.len()]);
        let _ = writeln!(
            out,
            "quiver_flush_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = get(&self.flush_micros) as f64 / 1e6;
        let _ = writeln!(
            out,
            "quiver_flush_seconds_sum {sum}\nquiver_flush_seconds_count {cumulative}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_counters_codes_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.chats_stored.fetch_add(3, Ordering::Relaxed);
        m.error(ErrorCode::NotFriends);
        m.error(ErrorCode::NotFriends);
        m.mesh_request(MeshKind::Receipt);
        m.flush(Duration::from_micros(80));
        m.flush(Duration::from_millis(3));
        m.flush(Duration::from_secs(5));
        let text = m.render(&Scraped::default());
        assert!(text.contains("quiver_chats_stored_total 3\n"), "{text}");
        assert!(text.contains("quiver_errors_total{code=\"NotFriends\"} 2\n"));
        assert!(text.contains("quiver_mesh_requests_total{kind=\"receipt\"} 1\n"));
        assert!(text.contains("quiver_flush_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("quiver_flush_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("quiver_flush_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("quiver_flush_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("quiver_flush_seconds_count 3\n"));
    }
}
