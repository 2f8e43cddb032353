//! A discrete-event simulator running the very same [`Engine`] for every node.
//!
//! Seeded and reproducible: the same [`SimConfig`] gives the same [`Report`], byte for byte.
//! Nodes are addressed by their sorted position; all nodes with a full view share one
//! `Arc<PeerList>`, and an engine is allocated only when its node first gets an event.
//!
//! Several broadcasts (`broadcasts > 1`) run one after another from the same originator, each
//! starting when the previous one's events (including every timer) are exhausted. Counters
//! (`sends`, `acks`, `resends`, `igyw`, per-node reads/writes) are totals over all broadcasts;
//! `covered` is the worst broadcast's coverage and `covered_mean` the mean; `max_hops` and
//! `time_to_full_ms` are the worst over broadcasts (`time_to_full_ms` is null if any broadcast
//! never reached every live node); `rmr` is total copies received over total deliveries, minus 1.

mod queue;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::broadcast::{Config, Engine, EngineError, Output, Redundancy, SplitMix64, Stats};
use crate::peers::{Address, PeerList};
use crate::wire::{Message, Strategy};
use queue::{EventKind, Queue};

/// Most peer-list entries all partial views together may hold (20 bytes each: 400 MB).
pub const PARTIAL_VIEW_ENTRY_LIMIT: u64 = 20_000_000;

/// One simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Network size `N`.
    pub nodes: usize,
    /// The protocol configuration every node runs.
    pub protocol: Config,
    /// Fixed one-way latency of every link.
    pub latency: Duration,
    /// Extra uniform random latency in `[0, jitter]` per message.
    pub jitter: Duration,
    /// Percentage of messages lost in transit.
    pub loss_percent: f64,
    /// Percentage of nodes that are dead (never the originator).
    pub dead_percent: f64,
    /// Percentage of the other peers each node knows (100 = full views).
    pub partial_view_percent: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Broadcasts run one after another.
    pub broadcasts: u32,
    /// Sorted position of the originator.
    pub originator: usize,
    /// Payload size of each broadcast in bytes.
    pub payload_size: usize,
    /// Whether the report lists reads and writes per node.
    pub per_node: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 27,
            protocol: Config::default(),
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            loss_percent: 0.0,
            dead_percent: 0.0,
            partial_view_percent: 100.0,
            seed: 1,
            broadcasts: 1,
            originator: 0,
            payload_size: 32,
            per_node: false,
        }
    }
}

/// Payload-bearing messages one node received and sent (gossip and direct).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeCounts {
    /// Sorted position.
    pub position: usize,
    /// Copies received.
    pub reads: u32,
    /// Copies sent.
    pub writes: u32,
}

/// The settings a report was produced with, so a JSON report describes itself.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReportConfig {
    /// Tree strategy.
    pub strategy: Strategy,
    /// ACKs on or off.
    pub acks: bool,
    /// Redundancy layer.
    pub redundancy: Redundancy,
    /// Clean-up layer on or off.
    pub cleanup: bool,
    /// Forward every tree copy like the Go reference.
    pub forward_duplicates: bool,
    /// Dead nodes in percent.
    pub dead_percent: f64,
    /// Message loss in percent.
    pub loss_percent: f64,
    /// Partial view size in percent.
    pub partial_view_percent: f64,
    /// Fixed link latency in milliseconds.
    pub latency_ms: f64,
    /// Maximum jitter in milliseconds.
    pub jitter_ms: f64,
    /// The seed.
    pub seed: u64,
    /// Originator position.
    pub originator: usize,
}

/// What a simulation measured (see the module docs for how broadcasts aggregate).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    /// Network size.
    pub nodes: usize,
    /// Live nodes (the originator included).
    pub live: usize,
    /// Live nodes that had the message (originator included), worst broadcast.
    pub covered: usize,
    /// Payload-bearing messages sent.
    pub sends: u64,
    /// ACKs sent.
    pub acks: u64,
    /// Replacement sends after ACK timeouts.
    pub resends: u64,
    /// IGYW offers sent.
    pub igyw: u64,
    /// Most hops of any delivery.
    pub max_hops: u32,
    /// Copies received per delivery, minus one.
    pub rmr: f64,
    /// Simulated milliseconds until every live node had the message; null if never.
    pub time_to_full_ms: Option<f64>,
    /// Broadcasts run.
    pub broadcasts: u32,
    /// Mean coverage over broadcasts.
    pub covered_mean: f64,
    /// Dead nodes.
    pub dead: usize,
    /// ACK deadlines missed.
    pub ack_timeouts: u64,
    /// Failed sends with no replacement left.
    pub give_ups: u64,
    /// Redundancy ring pushes.
    pub redundancy_sends: u64,
    /// Full messages sent after a WANT.
    pub cleanup_sends: u64,
    /// Copies of known messages received.
    pub duplicates: u64,
    /// The settings used.
    pub config: ReportConfig,
    /// Reads and writes per sorted position, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_node: Option<Vec<NodeCounts>>,
}

/// Why a simulation cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// `nodes` is 0.
    #[error("a network needs at least one node")]
    NoNodes,
    /// The originator position is not below `nodes`.
    #[error("originator {originator} is not a position below {nodes}")]
    BadOriginator {
        /// The position given.
        originator: usize,
        /// The network size.
        nodes: usize,
    },
    /// A percentage outside `[0, 100]`.
    #[error("{name} must be between 0 and 100, got {value}")]
    BadPercent {
        /// Which setting.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// Partial views over the memory limit.
    #[error("partial views would hold {entries} peer entries, over the limit of {limit}; use fewer nodes or a smaller percentage")]
    PartialViewTooLarge {
        /// Entries needed.
        entries: u64,
        /// [`PARTIAL_VIEW_ENTRY_LIMIT`].
        limit: u64,
    },
    /// The engine refused the broadcast.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> Result<Report, SimError> {
    validate(cfg)?;
    Sim::new(cfg).run()
}

fn validate(cfg: &SimConfig) -> Result<(), SimError> {
    if cfg.nodes == 0 {
        return Err(SimError::NoNodes);
    }
    if cfg.originator >= cfg.nodes {
        return Err(SimError::BadOriginator {
            originator: cfg.originator,
            nodes: cfg.nodes,
        });
    }
    for (name, value) in [
        ("loss percent", cfg.loss_percent),
        ("dead percent", cfg.dead_percent),
        ("partial view percent", cfg.partial_view_percent),
    ] {
        if !(0.0..=100.0).contains(&value) {
            return Err(SimError::BadPercent { name, value });
        }
    }
    if cfg.partial_view_percent < 100.0 {
        let n = cfg.nodes as f64;
        let entries = (n * (1.0 + (n - 1.0) * cfg.partial_view_percent / 100.0)) as u64;
        if entries > PARTIAL_VIEW_ENTRY_LIMIT {
            return Err(SimError::PartialViewTooLarge {
                entries,
                limit: PARTIAL_VIEW_ENTRY_LIMIT,
            });
        }
    }
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Mixes the run seed with a stream number, so each random choice has its own stream.
fn sub_seed(seed: u64, stream: u64) -> u64 {
    SplitMix64::new(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64()
}

/// Per-broadcast progress.
#[derive(Default)]
struct Progress {
    covered: usize,
    max_hops: u32,
    full_at: Option<u64>,
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    config: Arc<Config>,
    list: Arc<PeerList>,
    engines: Vec<Option<Box<Engine>>>,
    dead: Vec<bool>,
    live: usize,
    /// The time of each node's pending timer event (`u64::MAX` for none).
    timer_at: Vec<u64>,
    queue: Queue,
    rng: ChaCha8Rng,
    now: u64,
    reads: Vec<u32>,
    writes: Vec<u32>,
    copies: u64,
    deliveries: u64,
    progress: Progress,
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig) -> Self {
        let n = cfg.nodes;
        let list = Arc::new(PeerList::new((0..n as u64).map(Address::from_index)));
        let mut dead = vec![false; n];
        let dead_count = ((n as f64) * cfg.dead_percent / 100.0).round() as usize;
        let mut others: Vec<usize> = (0..n).filter(|&i| i != cfg.originator).collect();
        let mut dead_rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 1));
        let (picked, _) = others.partial_shuffle(&mut dead_rng, dead_count.min(n - 1));
        for &i in picked.iter() {
            dead[i] = true;
        }
        let live = dead.iter().filter(|d| !**d).count();
        Sim {
            cfg,
            config: Arc::new(cfg.protocol.clone()),
            list,
            engines: (0..n).map(|_| None).collect(),
            dead,
            live,
            timer_at: vec![u64::MAX; n],
            queue: Queue::default(),
            rng: ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 2)),
            now: 0,
            reads: vec![0; n],
            writes: vec![0; n],
            copies: 0,
            deliveries: 0,
            progress: Progress::default(),
        }
    }

    fn view(&self, i: usize) -> Arc<PeerList> {
        if self.cfg.partial_view_percent >= 100.0 {
            return self.list.clone();
        }
        let p = self.cfg.partial_view_percent / 100.0;
        let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(self.cfg.seed, 1000 + i as u64));
        let all = self.list.as_slice();
        let known = all
            .iter()
            .enumerate()
            .filter(|&(j, _)| j == i || rng.gen::<f64>() < p)
            .map(|(_, a)| *a);
        Arc::new(PeerList::new(known))
    }

    fn take_engine(&mut self, i: usize) -> Result<Box<Engine>, SimError> {
        if let Some(e) = self.engines[i].take() {
            return Ok(e);
        }
        let me = self.list.as_slice()[i];
        let seed = sub_seed(self.cfg.seed, 1 << 40 | i as u64);
        let e = Engine::with_shared_config(self.config.clone(), me, self.view(i), seed)?;
        Ok(Box::new(e))
    }

    fn run(mut self) -> Result<Report, SimError> {
        let mut covered_min = usize::MAX;
        let mut covered_sum = 0usize;
        let mut max_hops = 0;
        let mut worst_full: Option<f64> = Some(0.0);
        let payload = Bytes::from(vec![0xabu8; self.cfg.payload_size]);
        for _ in 0..self.cfg.broadcasts.max(1) {
            let start = self.now;
            self.progress = Progress {
                covered: 1,
                ..Progress::default()
            };
            if self.live == 1 {
                self.progress.full_at = Some(start);
            }
            let o = self.cfg.originator;
            let mut engine = self.take_engine(o)?;
            let r = engine.broadcast(
                Duration::from_nanos(self.now),
                payload.clone(),
                start / 1000,
            );
            self.drain(o, &mut engine);
            self.engines[o] = Some(engine);
            r?;
            while let Some(ev) = self.queue.pop() {
                self.now = ev.at;
                match ev.kind {
                    EventKind::Arrive { from, to, msg } => {
                        self.arrive(from as usize, to as usize, msg)?
                    }
                    EventKind::Timer { node } => self.timer(node as usize, ev.at)?,
                }
            }
            covered_min = covered_min.min(self.progress.covered);
            covered_sum += self.progress.covered;
            max_hops = max_hops.max(self.progress.max_hops);
            worst_full = match (worst_full, self.progress.full_at) {
                (Some(w), Some(at)) => Some(w.max((at - start) as f64 / 1e6)),
                _ => None,
            };
        }
        Ok(self.report(covered_min, covered_sum, max_hops, worst_full))
    }

    fn arrive(&mut self, from: usize, to: usize, msg: Message) -> Result<(), SimError> {
        if self.dead[to] {
            return Ok(());
        }
        if matches!(msg, Message::Gossip(_) | Message::Direct { .. }) {
            self.reads[to] += 1;
            self.copies += 1;
        }
        let mut engine = self.take_engine(to)?;
        let from_addr = self.list.as_slice()[from];
        // A refused message is counted in the engine's stats; the run goes on.
        let _ = engine.handle_message(Duration::from_nanos(self.now), from_addr, msg);
        self.drain(to, &mut engine);
        self.engines[to] = Some(engine);
        Ok(())
    }

    fn timer(&mut self, node: usize, at: u64) -> Result<(), SimError> {
        if self.timer_at[node] != at {
            return Ok(());
        }
        self.timer_at[node] = u64::MAX;
        let mut engine = self.take_engine(node)?;
        engine.handle_timeout(Duration::from_nanos(at));
        self.drain(node, &mut engine);
        self.engines[node] = Some(engine);
        Ok(())
    }

    fn drain(&mut self, i: usize, engine: &mut Engine) {
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Send { to, message } => self.send(i, to, message),
                Output::Deliver { hops, .. } => {
                    self.deliveries += 1;
                    let p = &mut self.progress;
                    p.covered += 1;
                    p.max_hops = p.max_hops.max(hops);
                    if p.covered == self.live && p.full_at.is_none() {
                        p.full_at = Some(self.now);
                    }
                }
            }
        }
        if let Some(t) = engine.poll_timeout() {
            let t = nanos(t);
            if t < self.timer_at[i] {
                self.timer_at[i] = t;
                self.queue.push(t, EventKind::Timer { node: i as u32 });
            }
        }
    }

    fn send(&mut self, from: usize, to: Address, msg: Message) {
        let Some(j) = self.list.position(&to) else {
            return;
        };
        if matches!(msg, Message::Gossip(_) | Message::Direct { .. }) {
            self.writes[from] += 1;
        }
        if self.cfg.loss_percent > 0.0 && self.rng.gen::<f64>() * 100.0 < self.cfg.loss_percent {
            return;
        }
        let jitter = nanos(self.cfg.jitter);
        let extra = if jitter > 0 {
            self.rng.gen_range(0..=jitter)
        } else {
            0
        };
        let at = self.now + nanos(self.cfg.latency) + extra;
        self.queue.push(
            at,
            EventKind::Arrive {
                from: from as u32,
                to: j as u32,
                msg,
            },
        );
    }

    fn report(
        &self,
        covered_min: usize,
        covered_sum: usize,
        max_hops: u32,
        time_to_full_ms: Option<f64>,
    ) -> Report {
        let mut s = Stats::default();
        for e in self.engines.iter().flatten() {
            s.add(e.stats());
        }
        let b = self.cfg.broadcasts.max(1);
        let c = self.cfg;
        let rmr = if self.deliveries == 0 {
            0.0
        } else {
            self.copies as f64 / self.deliveries as f64 - 1.0
        };
        Report {
            nodes: c.nodes,
            live: self.live,
            covered: covered_min,
            sends: s.gossip_sent,
            acks: s.acks_sent,
            resends: s.resends,
            igyw: s.igyw_sent,
            max_hops,
            rmr,
            time_to_full_ms,
            broadcasts: b,
            covered_mean: covered_sum as f64 / f64::from(b),
            dead: c.nodes - self.live,
            ack_timeouts: s.ack_timeouts,
            give_ups: s.give_ups,
            redundancy_sends: s.redundancy_sends,
            cleanup_sends: s.cleanup_sends,
            duplicates: s.duplicates,
            config: ReportConfig {
                strategy: c.protocol.strategy,
                acks: c.protocol.acks,
                redundancy: c.protocol.redundancy,
                cleanup: c.protocol.cleanup,
                forward_duplicates: c.protocol.forward_duplicates,
                dead_percent: c.dead_percent,
                loss_percent: c.loss_percent,
                partial_view_percent: c.partial_view_percent,
                latency_ms: c.latency.as_secs_f64() * 1e3,
                jitter_ms: c.jitter.as_secs_f64() * 1e3,
                seed: c.seed,
                originator: c.originator,
            },
            per_node: c.per_node.then(|| {
                (0..c.nodes)
                    .map(|i| NodeCounts {
                        position: i,
                        reads: self.reads[i],
                        writes: self.writes[i],
                    })
                    .collect()
            }),
        }
    }
}

#[cfg(test)]
mod tests;
