//! Node-level Prometheus metrics: deliveries, duplicates, the reliability layers, latency.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use raintree_proto::broadcast::Stats;

/// Counters mirrored from the protocol engine's [`Stats`], plus a latency histogram.
#[derive(Clone)]
pub struct NodeMetrics {
    /// One per entry of [`Stats::FIELDS`], in its order.
    counters: [Counter; Stats::FIELDS.len()],
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

    /// Registers every metric under the `raintree_` prefix: engine counter `x` as
    /// `raintree_x_total`, its doc comment as help.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("raintree");
        for (f, c) in Stats::FIELDS.iter().zip(&self.counters) {
            r.register(f.name(), f.help(), c.clone());
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
        let new = now.since(last);
        for (f, c) in Stats::FIELDS.iter().zip(&self.counters) {
            c.inc_by(f.get(&new));
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
    use prometheus_client::encoding::text::encode;

    /// Every engine counter is exported once, as a counter, with what the engine counted: the
    /// `# TYPE` line catches a counter whose name another metric already took.
    #[test]
    fn every_engine_counter_has_its_own_metric() {
        let m = NodeMetrics::new();
        let mut registry = Registry::default();
        m.register(&mut registry);
        for f in Stats::FIELDS {
            let only: Stats = serde_json::from_str(&format!("{{\"{}\": 7}}", f.name())).unwrap();
            m.sync(&mut Stats::default(), &only);
        }
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for f in Stats::FIELDS {
            let name = format!("raintree_{}", f.name());
            let types: Vec<_> = text
                .lines()
                .filter(|l| {
                    l.strip_prefix("# TYPE ").and_then(|t| t.split(' ').next()) == Some(&name)
                })
                .collect();
            assert_eq!(types, [format!("# TYPE {name} counter")], "{text}");
            assert!(
                text.lines().any(|l| l == format!("{name}_total 7")),
                "`{}` not exported with its value: {text}",
                f.name()
            );
        }
    }
}
