//! The LocalNet's figures: what a run gathered, and the report computed from it.

use std::collections::{HashMap, HashSet};

use raintree_proto::broadcast::Redundancy;
use raintree_proto::wire::Strategy;
use serde::Serialize;

use raintree_proto::broadcast::Stats;

use super::collect::{Deliveries, MsgKey, NodeStats};
use super::fleet::FailedNode;
use super::prometheus::PromCheck;

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize, Default)]
pub struct Latency {
    /// Median over messages of the time until the last live node delivered.
    pub p50: f64,
    /// 99th percentile of the same.
    pub p99: f64,
    /// The slowest message.
    pub max: f64,
}

/// A measured broadcast as the harness sent it.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Sorted position of the originator.
    pub origin: usize,
    /// Harness clock just before the broadcast request, microseconds since the Unix epoch.
    pub at_us: u64,
}

/// Everything a run gathered, from which the report and the HTML page are computed.
pub struct RunData {
    /// Nodes started.
    pub nodes: usize,
    /// Nodes alive at the end of the run, sorted positions.
    pub live: Vec<usize>,
    /// Nodes killed before the first broadcast.
    pub killed_before: Vec<usize>,
    /// Nodes killed while broadcasts were in flight.
    pub killed_during: Vec<usize>,
    /// The measured broadcasts.
    pub sent: HashMap<MsgKey, Sent>,
    /// Their deliveries.
    pub deliveries: Deliveries,
    /// Per node, counters over the broadcast phase (up to its kill for a node killed during it).
    pub per_node: Vec<Option<NodeStats>>,
    /// CPU milliseconds of every node process over the broadcast phase.
    pub cpu_ms: f64,
    /// Loopback bytes over the broadcast phase, if `/proc/net/dev` was readable.
    pub loopback_bytes: Option<u64>,
    /// Harness clock when the kill during the run happened.
    pub killed_at_us: Option<u64>,
    /// Nodes that failed to start, answer or stop.
    pub failed: Vec<FailedNode>,
    /// Resident memory of the live nodes over the broadcast phase, with `--rss-every-s`.
    pub rss: Vec<RssSample>,
}

/// Resident memory of the node processes at one moment of the broadcast phase.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RssSample {
    /// Seconds since the first broadcast.
    pub t_s: f64,
    /// Mean over the sampled nodes, MiB.
    pub mean_mib: f64,
    /// Largest node, MiB.
    pub max_mib: f64,
}

impl RunData {
    /// Receivers that count for a message: nodes alive at the end, other than the originator.
    pub fn receivers(&self, origin: usize) -> usize {
        self.live.len() - usize::from(self.live.contains(&origin))
    }

    /// Per message: deliveries at nodes alive at the end, in order of latency.
    pub fn live_deliveries(&self) -> Vec<(MsgKey, Sent, Vec<super::collect::Seen>)> {
        let live: HashSet<usize> = self.live.iter().copied().collect();
        let mut out: Vec<_> = self
            .sent
            .iter()
            .map(|(k, s)| {
                let mut v: Vec<_> = self
                    .deliveries
                    .by_message
                    .get(k)
                    .map(|v| {
                        v.iter()
                            .filter(|d| live.contains(&d.node))
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default();
                v.sort_by_key(|d| d.latency_us);
                (k.clone(), *s, v)
            })
            .collect();
        out.sort_by_key(|(_, s, _)| s.at_us);
        out
    }

    /// Engine and transport counters summed over every node.
    pub fn totals(&self) -> NodeStats {
        let mut t = NodeStats::default();
        for s in self.per_node.iter().flatten() {
            t.engine.add(&s.engine);
            t.transport.bytes_sent += s.transport.bytes_sent;
            t.transport.bytes_received += s.transport.bytes_received;
            t.transport.frames_sent += s.transport.frames_sent;
            t.transport.queue_drops += s.transport.queue_drops;
        }
        t
    }
}

/// The settings a run used, echoed in the report.
pub struct Settings {
    /// Payload bytes.
    pub size: usize,
    /// Tree strategy.
    pub strategy: Strategy,
    /// Redundancy layer.
    pub redundancy: Redundancy,
    /// ACKs on.
    pub acks: bool,
    /// Clean-up on.
    pub cleanup: bool,
    /// `--kill-after-ms`.
    pub kill_after_ms: Option<u64>,
}

/// The LocalNet report (`--json` prints it as is).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Nodes started.
    pub nodes: usize,
    /// Nodes alive at the end of the run: the receivers every figure counts.
    pub live: usize,
    /// Nodes killed on purpose (before plus during).
    pub killed: usize,
    /// Nodes killed before the first broadcast.
    pub killed_before: usize,
    /// Nodes killed while broadcasts were in flight (`--kill-after-ms`).
    pub killed_during: usize,
    /// Milliseconds after the first broadcast at which `killed_during` nodes were killed.
    pub kill_after_ms: Option<u64>,
    /// Broadcasts sent.
    pub messages: usize,
    /// Payload size in bytes.
    pub size: usize,
    /// Strategy used.
    pub strategy: Strategy,
    /// Redundancy layer used.
    pub redundancy: Redundancy,
    /// ACKs on.
    pub acks: bool,
    /// Clean-up on.
    pub cleanup: bool,
    /// Deliveries over expected deliveries at live non-originating nodes (1.0 = all).
    pub coverage: f64,
    /// The worst message's coverage of live nodes.
    pub min_message_coverage: f64,
    /// Messages that reached every node alive at the end.
    pub complete_messages: usize,
    /// Time to full coverage, over the complete messages.
    pub latency_ms: Latency,
    /// Fully delivered broadcasts per second, from the first broadcast to the last full
    /// coverage (meaningful with `--rate 0`).
    pub throughput_msgs_per_s: f64,
    /// User + system CPU of every node process over the broadcast phase, per broadcast.
    pub cpu_ms_per_broadcast: f64,
    /// Payload copies received per delivery (1.0 = no duplicate).
    pub copies_per_delivery: f64,
    /// Transport bytes sent by all nodes (frames before encryption), per broadcast.
    pub bytes_per_broadcast: f64,
    /// Bytes over the loopback interface during the broadcast phase (transport ciphertext,
    /// TCP/IP headers and the harness's own admin traffic), per broadcast.
    pub loopback_bytes_per_broadcast: Option<f64>,
    /// `loopback_bytes_per_broadcast / bytes_per_broadcast`.
    pub loopback_ratio: Option<f64>,
    /// The engines' counters over the broadcast phase, summed over every node; in JSON their
    /// keys sit beside the others.
    #[serde(flatten)]
    pub engine: Stats,
    /// Messages the transports dropped before the wire.
    pub queue_drops: u64,
    /// Prometheus's view of the same run, when `--prometheus` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PromCheck>,
    /// Nodes that failed to start, answer or stop cleanly.
    pub failed_nodes: Vec<FailedNode>,
    /// Node memory over the broadcast phase (with `--rss-every-s`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rss: Vec<RssSample>,
    /// Wall-clock seconds of the whole run.
    pub duration_s: f64,
}

impl Report {
    /// Computes the figures of `run`.
    pub fn new(run: &RunData, settings: &Settings, duration_s: f64) -> Self {
        let per_msg = run.live_deliveries();
        let mut want = 0usize;
        let mut got = 0usize;
        let mut min_cov: f64 = 1.0;
        let mut full_ms: Vec<f64> = Vec::new();
        let mut first_origin_us = u64::MAX;
        let mut last_full_us = 0u64;
        for (_, sent, seen) in &per_msg {
            let receivers = run.receivers(sent.origin);
            want += receivers;
            got += seen.len();
            if receivers > 0 {
                min_cov = min_cov.min(seen.len() as f64 / receivers as f64);
            }
            // The node's own stamp, when a delivery carries it, is closer than the harness's.
            let origin_us = seen
                .iter()
                .map(|d| d.at_us.saturating_sub(d.latency_us))
                .min()
                .unwrap_or(sent.at_us);
            first_origin_us = first_origin_us.min(origin_us);
            if seen.len() >= receivers {
                let last = seen.last().map_or(0, |d| d.latency_us);
                full_ms.push(last as f64 / 1000.0);
                last_full_us = last_full_us.max(seen.last().map_or(origin_us, |d| d.at_us));
            }
        }
        full_ms.sort_by(|a, b| a.total_cmp(b));
        let messages = per_msg.len();
        let per_broadcast = |x: f64| {
            if messages == 0 {
                0.0
            } else {
                x / messages as f64
            }
        };
        let totals = run.totals();
        let (deliveries, duplicates) = (totals.engine.deliveries, totals.engine.duplicates);
        let bytes = per_broadcast(totals.transport.bytes_sent as f64);
        let loopback = run.loopback_bytes.map(|b| per_broadcast(b as f64));
        let span_s = last_full_us.saturating_sub(first_origin_us) as f64 / 1e6;
        Report {
            nodes: run.nodes,
            live: run.live.len(),
            killed: run.killed_before.len() + run.killed_during.len(),
            killed_before: run.killed_before.len(),
            killed_during: run.killed_during.len(),
            kill_after_ms: settings.kill_after_ms,
            messages,
            size: settings.size,
            strategy: settings.strategy,
            redundancy: settings.redundancy,
            acks: settings.acks,
            cleanup: settings.cleanup,
            coverage: if want == 0 {
                1.0
            } else {
                got as f64 / want as f64
            },
            min_message_coverage: if messages == 0 { 1.0 } else { min_cov },
            complete_messages: full_ms.len(),
            latency_ms: Latency {
                p50: percentile(&full_ms, 0.50),
                p99: percentile(&full_ms, 0.99),
                max: full_ms.last().copied().unwrap_or(0.0),
            },
            throughput_msgs_per_s: if span_s > 0.0 {
                full_ms.len() as f64 / span_s
            } else {
                0.0
            },
            cpu_ms_per_broadcast: per_broadcast(run.cpu_ms),
            copies_per_delivery: if deliveries > 0 {
                (deliveries + duplicates) as f64 / deliveries as f64
            } else {
                0.0
            },
            bytes_per_broadcast: bytes,
            loopback_bytes_per_broadcast: loopback,
            loopback_ratio: loopback.filter(|_| bytes > 0.0).map(|l| l / bytes),
            engine: totals.engine,
            queue_drops: totals.transport.queue_drops,
            prometheus: None,
            failed_nodes: run.failed.clone(),
            rss: run.rss.clone(),
            duration_s,
        }
    }

    /// Prints the readable report.
    pub fn print(&self) {
        let r = self;
        println!("raintree LocalNet: {} node processes on 127.0.0.1", r.nodes);
        println!(
            "  strategy {:?}, redundancy {}, acks {}, clean-up {}",
            r.strategy,
            r.redundancy,
            on_off(r.acks),
            on_off(r.cleanup)
        );
        let during = match r.kill_after_ms {
            Some(ms) => format!(" + {} killed {ms} ms into the run", r.killed_during),
            None => String::new(),
        };
        println!(
            "  {} broadcasts of {} bytes; {} live nodes, {} killed before{during}",
            r.messages, r.size, r.live, r.killed_before
        );
        println!(
            "  coverage of live nodes   {:.4} ({} of {} messages reached every live node; worst {:.4})",
            r.coverage, r.complete_messages, r.messages, r.min_message_coverage
        );
        println!(
            "  time to full coverage    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max
        );
        println!(
            "  throughput               {:.1} fully delivered broadcasts/s",
            r.throughput_msgs_per_s
        );
        println!(
            "  CPU                      {:.2} ms per broadcast (all node processes)",
            r.cpu_ms_per_broadcast
        );
        println!("  copies per delivery      {:.3}", r.copies_per_delivery);
        match (r.loopback_bytes_per_broadcast, r.loopback_ratio) {
            (Some(lo), Some(ratio)) => println!(
                "  bytes on the wire        {:.0} per broadcast (loopback {:.0}, {:.2}x)",
                r.bytes_per_broadcast, lo, ratio
            ),
            _ => println!(
                "  bytes on the wire        {:.0} per broadcast",
                r.bytes_per_broadcast
            ),
        }
        println!(
            "  resends {}, ack timeouts {}, give-ups {}, redundancy sends {}, igyw offers {}, queue drops {}",
            r.engine.resends,
            r.engine.ack_timeouts,
            r.engine.give_ups,
            r.engine.redundancy_sends,
            r.engine.igyw_sent,
            r.queue_drops
        );
        if let Some(p) = &r.prometheus {
            println!(
                "  prometheus               agrees: {} deliveries, {} bytes, {} resends ({} samples)",
                p.deliveries, p.bytes_sent, p.resends, p.scrapes
            );
        }
        if !r.rss.is_empty() {
            let line: Vec<String> = r
                .rss
                .iter()
                .map(|x| format!("{:.0} s {:.1}/{:.1}", x.t_s, x.mean_mib, x.max_mib))
                .collect();
            println!("  node RSS MiB mean/max    {}", line.join(", "));
        }
        if r.failed_nodes.is_empty() {
            println!("  failed nodes             none");
        } else {
            println!("  failed nodes             {}", r.failed_nodes.len());
            for f in &r.failed_nodes {
                println!(
                    "    position {} ({}): {}",
                    f.position,
                    &f.address[..8],
                    f.reason
                );
            }
        }
        println!("  took {:.1} s", r.duration_s);
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localnet::collect::Seen;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    fn settings() -> Settings {
        Settings {
            size: 1,
            strategy: Strategy::Exact,
            redundancy: Redundancy::Off,
            acks: true,
            cleanup: false,
            kill_after_ms: Some(5),
        }
    }

    #[test]
    fn coverage_counts_only_nodes_alive_at_the_end() {
        // Four nodes; node 3 died during the run after receiving message a; b missed node 2.
        let mut deliveries = Deliveries::new(4);
        let seen = |node, latency_us: u64| Seen {
            node,
            latency_us,
            hops: 1,
            at_us: 1_000_000 + latency_us,
        };
        let a = ("0a".to_string(), 1);
        let b = ("0a".to_string(), 2);
        deliveries
            .by_message
            .insert(a.clone(), vec![seen(1, 100), seen(2, 300), seen(3, 200)]);
        deliveries.by_message.insert(b.clone(), vec![seen(1, 50)]);
        let sent = Sent {
            origin: 0,
            at_us: 1_000_000,
        };
        let run = RunData {
            nodes: 4,
            live: vec![0, 1, 2],
            killed_before: vec![],
            killed_during: vec![3],
            sent: [(a, sent), (b, sent)].into_iter().collect(),
            deliveries,
            per_node: vec![None; 4],
            cpu_ms: 10.0,
            loopback_bytes: None,
            killed_at_us: None,
            failed: vec![],
            rss: vec![],
        };
        let r = Report::new(&run, &settings(), 1.0);
        assert_eq!((r.live, r.killed_during, r.killed), (3, 1, 1));
        // 3 of 4 expected deliveries at live receivers; node 3's copy does not count.
        assert_eq!(r.coverage, 0.75);
        assert_eq!(r.min_message_coverage, 0.5);
        assert_eq!(r.complete_messages, 1);
        assert_eq!(r.latency_ms.max, 0.3);
        // One complete message over 300 µs from origination to its last delivery.
        assert!((r.throughput_msgs_per_s - 1.0 / 0.0003).abs() < 1e-6);
        assert_eq!(r.cpu_ms_per_broadcast, 5.0);
    }

    #[test]
    fn json_has_every_engine_counter_once_beside_the_figures() {
        let mut node = NodeStats::default();
        node.engine.deliveries = 3;
        node.engine.igyw_sent = 2;
        let run = RunData {
            nodes: 1,
            live: vec![0],
            killed_before: vec![],
            killed_during: vec![],
            sent: HashMap::new(),
            deliveries: Deliveries::new(1),
            per_node: vec![Some(node)],
            cpu_ms: 0.0,
            loopback_bytes: None,
            killed_at_us: None,
            failed: vec![],
            rss: vec![],
        };
        let json = serde_json::to_string(&Report::new(&run, &settings(), 1.0)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        // A key written twice (a counter named like a figure) parses as one, so it re-encodes
        // shorter.
        assert_eq!(v.to_string().len(), json.len(), "{json}");
        for f in Stats::FIELDS {
            assert!(v[f.name()].is_u64(), "{} in {json}", f.name());
        }
        assert_eq!(
            (v["deliveries"].as_u64(), v["igyw_sent"].as_u64()),
            (Some(3), Some(2))
        );
    }
}
