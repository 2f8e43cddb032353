//! Node-level Prometheus metrics: deliveries, duplicates, the reliability layers, latency.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use raintree_proto::broadcast::Stats;

/// A counter's name, help text, metric, and where its value sits in [`Stats`].
type CounterRow<'a> = (&'static str, &'static str, &'a Counter, fn(&Stats) -> u64);

/// Counters mirrored from the protocol engine's [`Stats`], plus a latency histogram.
#[derive(Clone)]
pub struct NodeMetrics {
    broadcasts: Counter,
    deliveries: Counter,
    duplicates: Counter,
    gossip_sent: Counter,
    acks_sent: Counter,
    acks_received: Counter,
    ack_timeouts: Counter,
    resends: Counter,
    give_ups: Counter,
    redundancy_sends: Counter,
    igyw_sends: Counter,
    cleanup_sends: Counter,
    rejected: Counter,
    unreachable: Counter,
    suspicions: Counter,
    skips: Counter,
    probes: Counter,
    resplits: Counter,
    forged: Counter,
    impossible: Counter,
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
            broadcasts: Counter::default(),
            deliveries: Counter::default(),
            duplicates: Counter::default(),
            gossip_sent: Counter::default(),
            acks_sent: Counter::default(),
            acks_received: Counter::default(),
            ack_timeouts: Counter::default(),
            resends: Counter::default(),
            give_ups: Counter::default(),
            redundancy_sends: Counter::default(),
            igyw_sends: Counter::default(),
            cleanup_sends: Counter::default(),
            rejected: Counter::default(),
            unreachable: Counter::default(),
            suspicions: Counter::default(),
            skips: Counter::default(),
            probes: Counter::default(),
            resplits: Counter::default(),
            forged: Counter::default(),
            impossible: Counter::default(),
            peers: Gauge::default(),
            // 100 µs .. ~52 s: loopback deliveries through slow multi-hop resends.
            latency: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
        }
    }

    /// Each engine counter with its metric name, help and where its value sits in [`Stats`]:
    /// one table, so registering and syncing can never disagree.
    fn counters(&self) -> [CounterRow<'_>; 20] {
        [
            (
                "broadcasts",
                "Broadcasts originated by this node",
                &self.broadcasts,
                |s| s.broadcasts,
            ),
            (
                "deliveries",
                "Messages delivered to the application (once per id)",
                &self.deliveries,
                |s| s.deliveries,
            ),
            (
                "duplicates",
                "Payload copies received for an already delivered id",
                &self.duplicates,
                |s| s.duplicates,
            ),
            (
                "gossip_sent",
                "Payload-bearing gossip messages sent (all routes)",
                &self.gossip_sent,
                |s| s.gossip_sent,
            ),
            (
                "acks_sent",
                "ACKs sent for tree copies",
                &self.acks_sent,
                |s| s.acks_sent,
            ),
            (
                "acks_received",
                "ACKs received for our tree sends",
                &self.acks_received,
                |s| s.acks_received,
            ),
            (
                "ack_timeouts",
                "Tree sends whose ACK did not arrive in time",
                &self.ack_timeouts,
                |s| s.ack_timeouts,
            ),
            (
                "resends",
                "Replacement sends after a failed tree send",
                &self.resends,
                |s| s.resends,
            ),
            (
                "give_ups",
                "Failed tree sends with no live node left to take their part",
                &self.give_ups,
                |s| s.give_ups,
            ),
            (
                "redundancy_sends",
                "Level-0 redundancy pushes to ring neighbours",
                &self.redundancy_sends,
                |s| s.redundancy_sends,
            ),
            (
                "igyw_sends",
                "I-got-you-want offers sent",
                &self.igyw_sends,
                |s| s.igyw_sent,
            ),
            (
                "cleanup_sends",
                "Full messages sent after a WANT",
                &self.cleanup_sends,
                |s| s.cleanup_sends,
            ),
            (
                "rejected_messages",
                "Received messages the protocol refused",
                &self.rejected,
                |s| s.rejected,
            ),
            (
                "peer_unreachable",
                "Transport reports of a peer that cannot be reached",
                &self.unreachable,
                |s| s.unreachable,
            ),
            (
                "suspicions",
                "Peers newly suspected after an ACK timeout or an unreachable report",
                &self.suspicions,
                |s| s.suspicions,
            ),
            (
                "skips",
                "Tree sends passed over because the target was suspected",
                &self.skips,
                |s| s.skips,
            ),
            (
                "probes",
                "IGYW probes sent to suspected peers",
                &self.probes,
                |s| s.probes,
            ),
            (
                "resplits",
                "Failed parts of the exact tree re-split among their remaining nodes",
                &self.resplits,
                |s| s.resplits,
            ),
            (
                "forged_messages",
                "Copies dropped as forged (bad origin signature, substituted payload, spoofed direct)",
                &self.forged,
                |s| s.forged,
            ),
            (
                "impossible_ranges",
                "Tree copies refused: a level or range no correct sender could send",
                &self.impossible,
                |s| s.impossible,
            ),
        ]
    }

    /// Registers every metric under the `raintree_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("raintree");
        for (name, help, c, _) in self.counters() {
            r.register(name, help, c.clone());
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
        for (_, _, c, field) in self.counters() {
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
