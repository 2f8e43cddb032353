//! Node-level Prometheus metrics: deliveries, duplicates, the reliability layers, latency.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use raintree_proto::broadcast::Stats;

/// A counter's metric name, help text, and where its value sits in [`Stats`].
type CounterRow = (&'static str, &'static str, fn(&Stats) -> u64);

/// Every engine counter exported: its metric name, help text, and where its value sits in
/// [`Stats`]. The one list of them here, so registering and syncing can never disagree.
const COUNTERS: [CounterRow; 23] = [
    ("broadcasts", "Broadcasts originated by this node", |s| {
        s.broadcasts
    }),
    (
        "deliveries",
        "Messages delivered to the application (once per id)",
        |s| s.deliveries,
    ),
    (
        "duplicates",
        "Payload copies received for an already delivered id",
        |s| s.duplicates,
    ),
    (
        "gossip_sent",
        "Payload-bearing gossip messages sent (all routes)",
        |s| s.gossip_sent,
    ),
    ("acks_sent", "ACKs sent for tree copies", |s| s.acks_sent),
    ("acks_received", "ACKs received for our tree sends", |s| {
        s.acks_received
    }),
    (
        "ack_timeouts",
        "Tree sends whose ACK did not arrive in time",
        |s| s.ack_timeouts,
    ),
    (
        "resends",
        "Replacement sends after a failed tree send",
        |s| s.resends,
    ),
    (
        "give_ups",
        "Failed tree sends with no live node left to take their part",
        |s| s.give_ups,
    ),
    (
        "redundancy_sends",
        "Level-0 redundancy pushes to ring neighbours",
        |s| s.redundancy_sends,
    ),
    ("igyw_sends", "I-got-you-want offers sent", |s| s.igyw_sent),
    ("cleanup_sends", "Full messages sent after a WANT", |s| {
        s.cleanup_sends
    }),
    (
        "rejected_messages",
        "Received messages the protocol refused",
        |s| s.rejected,
    ),
    (
        "peer_unreachable",
        "Transport reports of a peer that cannot be reached",
        |s| s.unreachable,
    ),
    (
        "suspicions",
        "Peers newly suspected after an ACK timeout or an unreachable report",
        |s| s.suspicions,
    ),
    (
        "skips",
        "Tree sends passed over because the target was suspected",
        |s| s.skips,
    ),
    ("probes", "IGYW probes sent to suspected peers", |s| {
        s.probes
    }),
    (
        "resplits",
        "Failed parts of the exact tree re-split among their remaining nodes",
        |s| s.resplits,
    ),
    (
        "repaid",
        "Messages offered again to a peer that failed to take them, once it was heard from",
        |s| s.repaid,
    ),
    (
        "forged_messages",
        "Copies dropped as forged (bad origin signature, substituted payload, spoofed direct)",
        |s| s.forged,
    ),
    (
        "impossible_ranges",
        "Tree copies refused: a level or range no correct sender could send",
        |s| s.impossible,
    ),
    (
        "shed_messages",
        "Messages received while held payloads filled their budget: sent once, untracked",
        |s| s.shed,
    ),
    (
        "flood_refusals",
        "New ids refused because their origin held its whole share of the seen-set",
        |s| s.flood,
    ),
];

/// Counters mirrored from the protocol engine's [`Stats`], plus a latency histogram.
#[derive(Clone)]
pub struct NodeMetrics {
    /// One per row of [`COUNTERS`], in its order.
    counters: [Counter; COUNTERS.len()],
    peers: Gauge,
    latency: Histogram,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        Self {
            counters: std::array::from_fn(|_| Counter::default()),
            peers: Gauge::default(),
            // 100 µs .. ~52 s: loopback deliveries through slow multi-hop resends.
            latency: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
        }
    }

    /// Registers every metric under the `raintree_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("raintree");
        for ((name, help, _), c) in COUNTERS.iter().zip(&self.counters) {
            r.register(*name, *help, c.clone());
        }
        r.register(
            "peers",
            "Peers in the current list, self included",
            self.peers.clone(),
        );
        r.register_with_unit(
            "broadcast_latency",
            "Time from origination to delivery here, from the origin timestamp",
            prometheus_client::registry::Unit::Seconds,
            self.latency.clone(),
        );
    }

    /// Adds what the engine counted since `last` and remembers `now` as the new baseline.
    pub(crate) fn sync(&self, last: &mut Stats, now: &Stats) {
        for ((_, _, field), c) in COUNTERS.iter().zip(&self.counters) {
            c.inc_by(field(now).saturating_sub(field(last)));
        }
        *last = now.clone();
    }

    /// Records one delivery's end-to-end latency.
    pub(crate) fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Sets the peer-count gauge.
    pub(crate) fn set_peers(&self, n: usize) {
        self.peers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Engine counters deliberately not exported (internal detail or covered by another).
    const NOT_EXPORTED: [&str; 4] = ["igyw_want", "igyw_have", "evicted", "seen_full"];

    #[test]
    fn every_engine_counter_is_exported_once_or_listed_as_internal() {
        for (name, _) in Stats::FIELDS {
            let one: Stats = serde_json::from_str(&format!("{{\"{name}\": 1}}")).unwrap();
            let exported = COUNTERS.iter().filter(|(_, _, get)| get(&one) == 1).count();
            let expected = usize::from(!NOT_EXPORTED.contains(name));
            assert_eq!(exported, expected, "engine counter `{name}`");
        }
    }
}
