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

/// The metric of `family` under `label`, created at zero on first use (clones share it).
fn at<L, M>(family: &Family<L, M>, label: L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone + Default,
{
    family.get_or_create(&label).clone()
}

/// Declares the metrics struct and its registration from one table: each exported metric's
/// field, type, name (under the `raintree_transport_` prefix) and help; then, after `+`, the
/// fields that are not exported.
macro_rules! metrics_table {
    (
        $(#[$doc:meta])*
        pub struct $name:ident {
            $($field:ident: $ty:ty => $export:literal, $help:literal;)*
            + $($extra:ident: $extra_ty:ty,)*
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default)]
        pub struct $name {
            $($field: $ty,)*
            $($extra: $extra_ty,)*
        }

        impl $name {
            /// Registers every metric under the `raintree_transport_` prefix.
            pub fn register(&self, registry: &mut Registry) {
                let r = registry.sub_registry_with_prefix("raintree_transport");
                $(r.register($export, $help, self.$field.clone());)*
            }
        }
    };
}

metrics_table! {
    /// Every transport metric. Clones share the same counters.
    pub struct TransportMetrics {
        frames_sent: Family<KindLabel, Counter> =>
            "frames_sent", "Frames written, by message kind";
        bytes_sent: Family<KindLabel, Counter> => "bytes_sent",
            "Frame bytes written (length prefix included, before encryption), by message kind";
        frames_received: Family<KindLabel, Counter> =>
            "frames_received", "Frames read, by message kind";
        bytes_received: Family<KindLabel, Counter> => "bytes_received",
            "Frame bytes read (length prefix included, after decryption), by message kind";
        queue_drops: Family<ReasonLabel, Counter> =>
            "queue_drops", "Messages dropped before reaching the wire, by reason";
        refused: Family<ReasonLabel, Counter> =>
            "refused_connections", "Inbound connections refused, by reason";
        handshake_failures: Family<ReasonLabel, Counter> =>
            "handshake_failures", "Handshakes that failed, by reason";
        frame_errors: Family<ReasonLabel, Counter> =>
            "frame_errors", "Connections closed for invalid inbound bytes, by reason";
        open_connections: Family<DirectionLabel, Gauge> =>
            "open_connections", "Established connections, by direction";
        connections_opened: Family<DirectionLabel, Counter> =>
            "connections_opened", "Connections established, by direction";
        requests: Family<OutcomeLabel, Counter> =>
            "requests", "Requests finished, by outcome";
        penalties: Family<OffenceLabel, Counter> =>
            "penalties", "Misbehaviour penalties given to peers, by offence";
        bans: Counter => "bans", "Peers banned for crossing the misbehaviour threshold";
        banned_peers: Gauge => "banned_peers", "Peers currently banned";
        // Per-kind handles resolved once, so the per-frame path takes no family lock.
        + hot: std::sync::Arc<std::sync::OnceLock<Hot>>,
    }
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

    pub(crate) fn conn_open(&self, direction: &'static str) {
        at(&self.open_connections, DirectionLabel { direction }).inc();
        at(&self.connections_opened, DirectionLabel { direction }).inc();
    }

    pub(crate) fn conn_closed(&self, direction: &'static str) {
        at(&self.open_connections, DirectionLabel { direction }).dec();
    }

    pub(crate) fn banned(&self, now_banned: usize) {
        self.bans.inc();
        self.set_banned(now_banned);
    }

    pub(crate) fn set_banned(&self, now_banned: usize) {
        self.banned_peers.set(now_banned as i64);
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
}

/// Per label metric, one line each: a counting method for the transport's tasks and a
/// reader for tests and reports, both taking the label's value.
macro_rules! labelled {
    (
        count { $($count:ident => $cfield:ident($clabel:ident: $cset:ident);)* }
        read { $($(#[$doc:meta])* $field:ident($label:ident: $set:ident) -> $ty:ty;)* }
    ) => {
        impl TransportMetrics {
            $(
                pub(crate) fn $count(&self, $clabel: &'static str) {
                    at(&self.$cfield, $cset { $clabel }).inc();
                }
            )*
            $(
                $(#[$doc])*
                pub fn $field(&self, $label: &'static str) -> $ty {
                    at(&self.$field, $set { $label }).get()
                }
            )*
        }
    };
}

labelled! {
    count {
        drop_msg => queue_drops(reason: ReasonLabel);
        refuse => refused(reason: ReasonLabel);
        handshake_failed => handshake_failures(reason: ReasonLabel);
        frame_error => frame_errors(reason: ReasonLabel);
        request_done => requests(outcome: OutcomeLabel);
        penalty => penalties(offence: OffenceLabel);
    }
    read {
        /// Penalties given for `offence` (an [`crate::transport::Offence`] label) so far.
        penalties(offence: OffenceLabel) -> u64;
        /// Messages dropped for `reason` so far.
        queue_drops(reason: ReasonLabel) -> u64;
        /// Inbound connections refused for `reason` so far.
        refused(reason: ReasonLabel) -> u64;
        /// Handshakes failed for `reason` so far.
        handshake_failures(reason: ReasonLabel) -> u64;
        /// Connections closed for inbound frame errors of `reason` so far.
        frame_errors(reason: ReasonLabel) -> u64;
        /// Connections currently open in `direction` (`inbound` / `outbound`).
        open_connections(direction: DirectionLabel) -> i64;
        /// Connections ever established in `direction`.
        connections_opened(direction: DirectionLabel) -> u64;
        /// Requests finished with `outcome` so far.
        requests(outcome: OutcomeLabel) -> u64;
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
