//! Prometheus metrics of the transport (names carry their unit; counters end in `_total`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use raintree_proto::wire::Message;

/// Message kinds in the order of [`kind_index`].
pub const KINDS: [&str; 8] = [
    "gossip",
    "ack",
    "igyw",
    "igyw_reply",
    "direct",
    "request",
    "response",
    "goodbye",
];

/// The index of a message kind in [`KINDS`].
pub fn kind_index(kind: &str) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

/// The index of `msg`'s kind in [`KINDS`], without comparing strings (twice per message).
pub fn message_kind_index(msg: &Message) -> usize {
    match msg {
        Message::Gossip(_) => 0,
        Message::Ack { .. } => 1,
        Message::Igyw { .. } => 2,
        Message::IgywReply { .. } => 3,
        Message::Direct { .. } => 4,
        Message::Request { .. } => 5,
        Message::Response { .. } => 6,
        Message::Goodbye { .. } => 7,
    }
}

/// Declares label sets of one label each: a struct whose one field names the label.
macro_rules! label_sets {
    ($($(#[$doc:meta])* $name:ident { $field:ident: $field_doc:literal })*) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        pub struct $name {
            #[doc = $field_doc]
            pub $field: &'static str,
        }
    )*};
}

label_sets! {
    /// A `kind` label.
    KindLabel { kind: "The message kind." }
    /// A `reason` label.
    ReasonLabel { reason: "Why it happened." }
    /// A `direction` label: `inbound` or `outbound`.
    DirectionLabel { direction: "`inbound` or `outbound`." }
    /// An `offence` label.
    OffenceLabel { offence: "What the peer did." }
    /// An `outcome` label.
    OutcomeLabel { outcome: "How it ended." }
}

/// Every transport metric. Clones share the same counters.
#[derive(Clone, Debug, Default)]
pub struct TransportMetrics {
    frames_sent: Family<KindLabel, Counter>,
    bytes_sent: Family<KindLabel, Counter>,
    frames_received: Family<KindLabel, Counter>,
    bytes_received: Family<KindLabel, Counter>,
    queue_drops: Family<ReasonLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    handshake_failures: Family<ReasonLabel, Counter>,
    frame_errors: Family<ReasonLabel, Counter>,
    open_connections: Family<DirectionLabel, Gauge>,
    connections_opened: Family<DirectionLabel, Counter>,
    requests: Family<OutcomeLabel, Counter>,
    penalties: Family<OffenceLabel, Counter>,
    bans: Counter,
    banned_peers: Gauge,
    // Per-kind handles resolved once, so the per-frame path takes no family lock.
    hot: std::sync::Arc<std::sync::OnceLock<Hot>>,
}

#[derive(Debug)]
struct Hot {
    frames_sent: Vec<Counter>,
    bytes_sent: Vec<Counter>,
    frames_received: Vec<Counter>,
    bytes_received: Vec<Counter>,
}

impl TransportMetrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every metric under the `raintree_transport_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("raintree_transport");
        r.register(
            "frames_sent",
            "Frames written, by message kind",
            self.frames_sent.clone(),
        );
        r.register(
            "bytes_sent",
            "Frame bytes written (length prefix included, before encryption), by message kind",
            self.bytes_sent.clone(),
        );
        r.register(
            "frames_received",
            "Frames read, by message kind",
            self.frames_received.clone(),
        );
        r.register(
            "bytes_received",
            "Frame bytes read (length prefix included, after decryption), by message kind",
            self.bytes_received.clone(),
        );
        r.register(
            "queue_drops",
            "Messages dropped before reaching the wire, by reason",
            self.queue_drops.clone(),
        );
        r.register(
            "refused_connections",
            "Inbound connections refused, by reason",
            self.refused.clone(),
        );
        r.register(
            "handshake_failures",
            "Handshakes that failed, by reason",
            self.handshake_failures.clone(),
        );
        r.register(
            "frame_errors",
            "Connections closed for invalid inbound bytes, by reason",
            self.frame_errors.clone(),
        );
        r.register(
            "open_connections",
            "Established connections, by direction",
            self.open_connections.clone(),
        );
        r.register(
            "connections_opened",
            "Connections established, by direction",
            self.connections_opened.clone(),
        );
        r.register(
            "requests",
            "Requests finished, by outcome",
            self.requests.clone(),
        );
        r.register(
            "penalties",
            "Misbehaviour penalties given to peers, by offence",
            self.penalties.clone(),
        );
        r.register(
            "bans",
            "Peers banned for crossing the misbehaviour threshold",
            self.bans.clone(),
        );
        r.register(
            "banned_peers",
            "Peers currently banned",
            self.banned_peers.clone(),
        );
    }

    fn hot(&self) -> &Hot {
        self.hot.get_or_init(|| {
            let f = |fam: &Family<KindLabel, Counter>| {
                KINDS
                    .iter()
                    .map(|k| fam.get_or_create(&KindLabel { kind: k }).clone())
                    .collect()
            };
            Hot {
                frames_sent: f(&self.frames_sent),
                bytes_sent: f(&self.bytes_sent),
                frames_received: f(&self.frames_received),
                bytes_received: f(&self.bytes_received),
            }
        })
    }

    pub(crate) fn sent(&self, kind: usize, bytes: usize) {
        let h = self.hot();
        h.frames_sent[kind].inc();
        h.bytes_sent[kind].inc_by(bytes as u64);
    }

    pub(crate) fn received(&self, kind: usize, bytes: usize) {
        let h = self.hot();
        h.frames_received[kind].inc();
        h.bytes_received[kind].inc_by(bytes as u64);
    }

    pub(crate) fn drop_msg(&self, reason: &'static str) {
        self.queue_drops
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn frame_error(&self, reason: &'static str) {
        self.frame_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn conn_open(&self, direction: &'static str) {
        self.open_connections
            .get_or_create(&DirectionLabel { direction })
            .inc();
        self.connections_opened
            .get_or_create(&DirectionLabel { direction })
            .inc();
    }

    pub(crate) fn conn_closed(&self, direction: &'static str) {
        self.open_connections
            .get_or_create(&DirectionLabel { direction })
            .dec();
    }

    pub(crate) fn request_done(&self, outcome: &'static str) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn penalty(&self, offence: &'static str) {
        self.penalties
            .get_or_create(&OffenceLabel { offence })
            .inc();
    }

    pub(crate) fn banned(&self, now_banned: usize) {
        self.bans.inc();
        self.set_banned(now_banned);
    }

    pub(crate) fn set_banned(&self, now_banned: usize) {
        self.banned_peers.set(now_banned as i64);
    }

    /// Penalties given for `offence` (an [`crate::transport::Offence`] label) so far.
    pub fn penalties(&self, offence: &'static str) -> u64 {
        self.penalties
            .get_or_create(&OffenceLabel { offence })
            .get()
    }

    /// Bans so far.
    pub fn bans(&self) -> u64 {
        self.bans.get()
    }

    /// Peers banned now.
    pub fn banned_peers(&self) -> i64 {
        self.banned_peers.get()
    }

    /// Frames sent of `kind` so far.
    pub fn frames_sent(&self, kind: &str) -> u64 {
        self.hot().frames_sent[kind_index(kind)].get()
    }

    /// Frames received of `kind` so far.
    pub fn frames_received(&self, kind: &str) -> u64 {
        self.hot().frames_received[kind_index(kind)].get()
    }

    /// Messages dropped for `reason` so far.
    pub fn queue_drops(&self, reason: &'static str) -> u64 {
        self.queue_drops
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// Inbound connections refused for `reason` so far.
    pub fn refused(&self, reason: &'static str) -> u64 {
        self.refused.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Handshakes failed for `reason` so far.
    pub fn handshake_failures(&self, reason: &'static str) -> u64 {
        self.handshake_failures
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// Connections closed for inbound frame errors of `reason` so far.
    pub fn frame_errors(&self, reason: &'static str) -> u64 {
        self.frame_errors
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// Connections currently open in `direction` (`inbound` / `outbound`).
    pub fn open_connections(&self, direction: &'static str) -> i64 {
        self.open_connections
            .get_or_create(&DirectionLabel { direction })
            .get()
    }

    /// Connections ever established in `direction`.
    pub fn connections_opened(&self, direction: &'static str) -> u64 {
        self.connections_opened
            .get_or_create(&DirectionLabel { direction })
            .get()
    }

    /// Requests finished with `outcome` so far.
    pub fn requests(&self, outcome: &'static str) -> u64 {
        self.requests.get_or_create(&OutcomeLabel { outcome }).get()
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;
    use bytes::Bytes;
    use raintree_proto::wire::{Gossip, MessageId, Route, Strategy};
    use raintree_proto::Address;

    #[test]
    fn message_kind_index_agrees_with_the_kind_label() {
        let id = MessageId {
            origin: Address([1; 20]),
            nonce: 1,
        };
        let all = [
            Message::Gossip(Gossip {
                id,
                level_or_range: 0,
                strategy: Strategy::Exact,
                route: Route::Tree,
                origin_time_us: 0,
                hops: 0,
                payload: Bytes::new(),
                signature: None,
            }),
            Message::Ack {
                id,
                level_or_range: 0,
            },
            Message::Igyw { id, span: 0 },
            Message::IgywReply { id, want: false },
            Message::Direct {
                id,
                payload: Bytes::new(),
            },
            Message::Request {
                id: 1,
                payload: Bytes::new(),
            },
            Message::Response {
                id: 1,
                payload: Bytes::new(),
            },
            Message::Goodbye { reason: "x".into() },
        ];
        let got: Vec<usize> = all.iter().map(message_kind_index).collect();
        let want: Vec<usize> = all.iter().map(|m| kind_index(m.kind())).collect();
        assert_eq!(got, want);
        assert_eq!(got, (0..KINDS.len()).collect::<Vec<_>>());
    }
}
