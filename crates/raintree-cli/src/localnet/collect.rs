//! Talking to the nodes' admin endpoints: broadcasts, typed counters, deliveries by cursor.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use raintree_proto::broadcast::Stats;
use serde::Deserialize;

use super::fleet::Fleet;
use crate::admin::{DeliveryRecord, TransportTotals};

/// A broadcast's id: originator address (hex) and nonce.
pub type MsgKey = (String, u64);

/// One node's `/stats` answer.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct NodeStats {
    /// Engine counters.
    pub engine: Stats,
    /// Transport totals.
    pub transport: TransportTotals,
    /// The `seq` of the node's newest delivery record.
    #[serde(default)]
    pub last_seq: u64,
}

impl NodeStats {
    /// What happened between `base` and `self`.
    pub fn minus(&self, base: &Self) -> Self {
        let t = &self.transport;
        let b = &base.transport;
        Self {
            engine: self.engine.since(&base.engine),
            transport: TransportTotals {
                bytes_sent: t.bytes_sent.saturating_sub(b.bytes_sent),
                bytes_received: t.bytes_received.saturating_sub(b.bytes_received),
                frames_sent: t.frames_sent.saturating_sub(b.frames_sent),
                frames_received: t.frames_received.saturating_sub(b.frames_received),
                queue_drops: t.queue_drops.saturating_sub(b.queue_drops),
                refused_connections: t.refused_connections.saturating_sub(b.refused_connections),
                // A gauge: its latest value, not a difference.
                open_connections: t.open_connections,
            },
            last_seq: self.last_seq,
        }
    }
}

/// The admin HTTP client.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
}

impl Admin {
    /// A client with a 10 s per-request timeout; connections are kept alive and reused.
    pub fn new() -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { http })
    }

    /// Broadcasts `size` random bytes made by the node itself (the payload does not cross the
    /// loopback being measured); returns the nonce.
    pub async fn broadcast(&self, admin: SocketAddr, size: usize) -> Result<u64, String> {
        let r = self
            .http
            .post(format!("http://{admin}/broadcast?fill={size}"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("broadcast refused: {e}"))?;
        let v: serde_json::Value = r
            .json()
            .await
            .map_err(|e| format!("bad /broadcast answer: {e}"))?;
        v["nonce"]
            .as_u64()
            .ok_or_else(|| format!("bad /broadcast answer: {v}"))
    }

    /// One node's counters.
    pub async fn stats(&self, admin: SocketAddr) -> Result<NodeStats, String> {
        self.http
            .get(format!("http://{admin}/stats"))
            .send()
            .await
            .map_err(|e| format!("stats unavailable: {e}"))?
            .json()
            .await
            .map_err(|e| format!("bad /stats answer: {e}"))
    }

    /// Deliveries after `cursor`, oldest first.
    pub async fn deliveries(
        &self,
        admin: SocketAddr,
        after: u64,
    ) -> Result<Vec<DeliveryRecord>, String> {
        self.http
            .get(format!("http://{admin}/deliveries?after={after}"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits until a node's delivery log reaches `seq` or `timeout` passes; returns its
    /// newest `seq`.
    pub async fn wait_seq(
        &self,
        admin: SocketAddr,
        seq: u64,
        timeout: Duration,
    ) -> Result<u64, String> {
        let v: serde_json::Value = self
            .http
            .get(format!(
                "http://{admin}/deliveries/wait?seq={seq}&timeout_ms={}",
                timeout.as_millis()
            ))
            .timeout(timeout + Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        v["last_seq"]
            .as_u64()
            .ok_or_else(|| format!("bad /deliveries/wait answer: {v}"))
    }

    /// Asks a node to shut down gracefully.
    pub async fn shutdown(&self, admin: SocketAddr) {
        let _ = self
            .http
            .post(format!("http://{admin}/shutdown"))
            .send()
            .await;
    }
}

/// One delivery of a measured broadcast at one node.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    /// Sorted position of the receiving node.
    pub node: usize,
    /// Microseconds from origination.
    pub latency_us: u64,
    /// Hops from the originator.
    pub hops: u32,
    /// Delivery time, microseconds since the Unix epoch.
    pub at_us: u64,
}

/// Every node's deliveries, fetched once each through the `/deliveries` cursor.
pub struct Deliveries {
    cursors: Vec<u64>,
    /// Deliveries of the broadcasts being watched, by message.
    pub by_message: HashMap<MsgKey, Vec<Seen>>,
}

impl Deliveries {
    /// No delivery seen yet from any of `n` nodes.
    pub fn new(n: usize) -> Self {
        Self {
            cursors: vec![0; n],
            by_message: HashMap::new(),
        }
    }

    /// Fetches what each of `nodes` delivered since the last fetch; keeps the deliveries of
    /// messages in `watch` (other than the originator's own) and skips the rest for good.
    pub async fn poll(
        &mut self,
        admin: &Admin,
        fleet: &Fleet,
        nodes: &[usize],
        watch: &HashMap<MsgKey, usize>,
    ) {
        for &i in nodes {
            let m = &fleet.members[i];
            let Some(addr) = m.admin else { continue };
            // A full page means more may be waiting.
            loop {
                let Ok(records) = admin.deliveries(addr, self.cursors[i]).await else {
                    break;
                };
                let Some(last) = records.last() else { break };
                self.cursors[i] = last.seq;
                let full = records.len() >= crate::admin::PAGE;
                for r in records {
                    let key = (r.origin, r.nonce);
                    if watch.contains_key(&key) && key.0 != m.address {
                        self.by_message.entry(key).or_default().push(Seen {
                            node: i,
                            latency_us: r.latency_us.unwrap_or(0),
                            hops: r.hops,
                            at_us: r.at_us,
                        });
                    }
                }
                if !full {
                    break;
                }
            }
        }
    }

    /// How many (message, receiver) pairs of `watch` are delivered, counting only receivers
    /// for which `counts(node)` holds.
    pub fn covered(&self, watch: &HashMap<MsgKey, usize>, counts: impl Fn(usize) -> bool) -> usize {
        watch
            .keys()
            .filter_map(|k| self.by_message.get(k))
            .map(|v| v.iter().filter(|s| counts(s.node)).count())
            .sum()
    }
}
