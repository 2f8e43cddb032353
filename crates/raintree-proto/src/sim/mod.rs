//! A discrete-event simulator running the very same [`Engine`] for every node.
//!
//! Seeded and reproducible: the same [`SimConfig`] gives the same [`Report`], byte for byte.
//! Nodes are addressed by their sorted position; all nodes with a full view share one
//! `Arc<PeerList>`, and an engine is allocated only when its node first gets an event.
//!
//! Several broadcasts (`broadcasts > 1`) run from the same originator: one after another, each
//! starting when the previous one's events (including every timer) are exhausted, or, with an
//! `interval`, every `interval` of simulated time whatever is still in flight. Counters (`sends`,
//! the engines' [`Stats`] such as `broadcasts`, `acks_sent`, `resends`, `igyw_sent`, per-node
//! reads/writes) are totals over all broadcasts; `covered`
//! is the worst broadcast's coverage and `covered_mean` the mean; `max_hops` and
//! `time_to_full_ms` are the worst over broadcasts (`time_to_full_ms` is null if any broadcast
//! never reached every stable node); `rmr` is total copies received over total deliveries,
//! minus 1. `per_broadcast` has each broadcast's own figures.
//!
//! Failures: dead nodes are down for the whole run; with churn, every `churn_period` a fresh
//! random `churn_percent` of the other nodes is down (a crash: a node coming back starts with a
//! fresh engine). A message to a down node vanishes (`Failure::Silent`) or, like a killed
//! process on a live host, is refused: the sender learns it one link latency later
//! (`Failure::Refused`, fed to [`Engine::peer_unreachable`]).

mod hostile;
mod queue;
mod seed;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::broadcast::{Config, EngineError, Redundancy, Stats};
use crate::drive::{self, Sink};
use crate::peers::{Address, PeerList};
use crate::wire::{BroadcastMessage, MessageId, Strategy};
pub use hostile::Hostile;
use queue::{EventKind, Queue};
use seed::SplitMix64;

/// The simulator's engine: nonces from a small seeded generator, reproducible run to run.
type Engine = crate::broadcast::Engine<SmallRng>;

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
    /// What a sender sees of a message to a down node.
    pub failure: Failure,
    /// Percentage of nodes down in each churn period (never the originator).
    pub churn_percent: f64,
    /// Length of a churn period.
    pub churn_period: Duration,
    /// Time between broadcast starts; zero runs each after the previous one settles.
    pub interval: Duration,
    /// Every node signs and verifies broadcasts with a real Ed25519 key (slower to set up:
    /// a key per node); off, nothing is signed and `protocol.verify_signatures` is ignored.
    pub signatures: bool,
    /// Percentage of nodes that are hostile (never the originator nor a dead node).
    pub hostile_percent: f64,
    /// What hostile nodes do.
    pub hostile: Hostile,
}

/// What a sender sees of a message to a node that is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// The message vanishes: only a deadline tells.
    #[default]
    Silent,
    /// The sender is told one link latency later (connection refused).
    Refused,
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
            failure: Failure::Silent,
            churn_percent: 0.0,
            churn_period: Duration::from_secs(1),
            interval: Duration::ZERO,
            signatures: false,
            hostile_percent: 0.0,
            hostile: Hostile::Blackhole,
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
    /// What senders see of messages to down nodes.
    pub failure: Failure,
    /// Nodes down per churn period, in percent.
    pub churn_percent: f64,
    /// Churn period in milliseconds.
    pub churn_period_ms: f64,
    /// Milliseconds between broadcast starts (0: each after the previous settles).
    pub interval_ms: f64,
    /// Whether nodes sign and verify broadcasts.
    pub signatures: bool,
    /// Hostile nodes in percent.
    pub hostile_percent: f64,
    /// What hostile nodes do.
    pub hostile: Hostile,
}

/// One broadcast's own figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BroadcastReport {
    /// Nodes that had the message (the originator included).
    pub covered: usize,
    /// Nodes up when it started.
    pub live: usize,
    /// Nodes up from its start to its end (its last message anywhere).
    pub stable: usize,
    /// Stable nodes that had it.
    pub stable_covered: usize,
    /// Honest nodes (neither dead nor hostile) that had it.
    pub honest_covered: usize,
    /// Payload-bearing messages of this broadcast sent.
    pub sends: u64,
    /// Simulated milliseconds until every stable node had it; null if never.
    pub time_to_full_ms: Option<f64>,
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
    /// Nodes neither dead nor hostile (the originator included).
    pub honest: usize,
    /// Honest nodes that had the message, worst broadcast.
    pub honest_covered: usize,
    /// Deliveries, at honest nodes, of copies forged by hostile nodes.
    pub forged_deliveries: u64,
    /// Payload-bearing messages sent.
    pub sends: u64,
    /// Every engine's counters summed, crashed incarnations included (`broadcasts` is the
    /// broadcasts run); in JSON their keys sit beside the others.
    #[serde(flatten)]
    pub engine: Stats,
    /// Most hops of any delivery.
    pub max_hops: u32,
    /// Copies received per delivery, minus one.
    pub rmr: f64,
    /// Simulated milliseconds until every live node had the message; null if never.
    pub time_to_full_ms: Option<f64>,
    /// Mean coverage over broadcasts.
    pub covered_mean: f64,
    /// Dead nodes.
    pub dead: usize,
    /// The settings used.
    pub config: ReportConfig,
    /// Each broadcast's own figures, in order.
    pub per_broadcast: Vec<BroadcastReport>,
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
    /// Churn without an interval between broadcasts or with a zero period never settles.
    #[error("churn needs a positive churn period and a positive interval between broadcasts")]
    ChurnNeedsTime,
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
        ("churn percent", cfg.churn_percent),
        ("partial view percent", cfg.partial_view_percent),
        ("hostile percent", cfg.hostile_percent),
    ] {
        if !(0.0..=100.0).contains(&value) {
            return Err(SimError::BadPercent { name, value });
        }
    }
    if cfg.churn_percent > 0.0 && (cfg.interval.is_zero() || cfg.churn_period.is_zero()) {
        return Err(SimError::ChurnNeedsTime);
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

/// One broadcast's progress.
struct Tracked {
    start: u64,
    /// When each node first had it (`u64::MAX`: never).
    had_at: Vec<u64>,
    /// The last time any message of it was sent or received.
    last: u64,
    sends: u64,
    /// Nodes up at its start.
    live: usize,
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    config: Arc<Config>,
    list: Arc<PeerList>,
    /// Each node's signing key by sorted position, when signatures are on.
    keys: Option<Vec<SigningKey>>,
    engines: Vec<Option<Box<Engine>>>,
    /// Engine instances each node has had: a restarted node gets a fresh seed.
    restarts: Vec<u32>,
    dead: Vec<bool>,
    /// Down for the current churn period.
    down: Vec<bool>,
    /// The down set of every churn period so far, for who was up throughout a broadcast.
    down_history: Vec<Vec<bool>>,
    /// The time of each node's pending timer event (`u64::MAX` for none).
    timer_at: Vec<u64>,
    queue: Queue,
    rng: ChaCha8Rng,
    churn_rng: ChaCha8Rng,
    now: u64,
    reads: Vec<u32>,
    writes: Vec<u32>,
    copies: u64,
    deliveries: u64,
    max_hops: u32,
    tracked: Vec<Tracked>,
    by_id: HashMap<MessageId, usize>,
    /// Engine counters of nodes whose engine was dropped by a crash.
    crashed_stats: Stats,
    hostile: Vec<bool>,
    /// Ids of copies forged by hostile nodes.
    forged: HashSet<MessageId>,
    forged_deliveries: u64,
    /// Gossip a hostile node's engine produced but the node did not send.
    withheld: u64,
    /// Gossip hostile nodes made up and sent.
    injected: u64,
    /// The range an inflating node's engine really gave each copy, by (id, from, to): it maps
    /// the ACK back, so the attacker's own bookkeeping stays straight (it does not re-split).
    inflated: HashMap<(MessageId, usize, usize), u32>,
}

/// Node `i`'s outputs, as the simulator takes them (through [`drive::drain`]).
struct NodeOut<'s, 'a> {
    sim: &'s mut Sim<'a>,
    i: usize,
}

impl Sink for NodeOut<'_, '_> {
    fn send(&mut self, to: Address, message: BroadcastMessage) {
        let (sim, i) = (&mut *self.sim, self.i);
        if !sim.hostile[i] {
            sim.send(i, to, message);
            return;
        }
        // A hostile node's sends pass through its behaviour first.
        let n = sim.cfg.nodes;
        let j = sim.list.position(&to).unwrap_or(i);
        let d = (j + n - i) % n;
        if let BroadcastMessage::Gossip(g) = &message {
            if sim.cfg.hostile == Hostile::Inflate {
                sim.inflated.insert((g.id, i, j), g.level_or_range);
            }
        }
        let gossip = matches!(message, BroadcastMessage::Gossip(_));
        match hostile::rewrite(sim.cfg.hostile, message, d, n) {
            Some(m) => sim.send(i, to, m),
            None => sim.withheld += u64::from(gossip),
        }
    }

    fn deliver(&mut self, id: MessageId, _: Bytes, _: u64, hops: u32) {
        let (sim, i) = (&mut *self.sim, self.i);
        sim.deliveries += 1;
        sim.max_hops = sim.max_hops.max(hops);
        if sim.forged.contains(&id) && !sim.hostile[i] {
            sim.forged_deliveries += 1;
        }
        if let Some(&b) = sim.by_id.get(&id) {
            let t = &mut sim.tracked[b];
            t.had_at[i] = t.had_at[i].min(sim.now);
            if sim.hostile[i] {
                sim.inject(i, id);
            }
        }
    }
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig) -> Self {
        let n = cfg.nodes;
        let keys = cfg.signatures.then(|| {
            let mut keys: Vec<(Address, SigningKey)> = (0..n as u64)
                .map(|i| {
                    let mut b = [0u8; 32];
                    b[..8].copy_from_slice(&sub_seed(cfg.seed, 1 << 48 | i).to_le_bytes());
                    b[8..16].copy_from_slice(&i.to_le_bytes());
                    let k = SigningKey::from_bytes(&b);
                    (Address::from_public_key(&k.verifying_key().to_bytes()), k)
                })
                .collect();
            keys.sort_by_key(|(a, _)| *a);
            keys
        });
        let list = Arc::new(match &keys {
            Some(k) => PeerList::new(k.iter().map(|(a, _)| *a)),
            None => PeerList::new((0..n as u64).map(Address::from_index)),
        });
        let keys = keys.map(|k| k.into_iter().map(|(_, k)| k).collect());
        let mut protocol = cfg.protocol.clone();
        protocol.verify_signatures = cfg.signatures;
        let mut dead = vec![false; n];
        let dead_count = ((n as f64) * cfg.dead_percent / 100.0).round() as usize;
        let mut others: Vec<usize> = (0..n).filter(|&i| i != cfg.originator).collect();
        let mut dead_rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 1));
        let (picked, _) = others.partial_shuffle(&mut dead_rng, dead_count.min(n - 1));
        for &i in picked.iter() {
            dead[i] = true;
        }
        let mut hostile = vec![false; n];
        let hostile_count = ((n as f64) * cfg.hostile_percent / 100.0).round() as usize;
        let mut candidates: Vec<usize> = (0..n)
            .filter(|&i| i != cfg.originator && !dead[i])
            .collect();
        let mut hostile_rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 4));
        let k = hostile_count.min(candidates.len());
        let (picked, _) = candidates.partial_shuffle(&mut hostile_rng, k);
        for &i in picked.iter() {
            hostile[i] = true;
        }
        Sim {
            cfg,
            config: Arc::new(protocol),
            list,
            keys,
            engines: (0..n).map(|_| None).collect(),
            restarts: vec![0; n],
            dead,
            down: vec![false; n],
            down_history: Vec::new(),
            timer_at: vec![u64::MAX; n],
            queue: Queue::default(),
            rng: ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 2)),
            churn_rng: ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 3)),
            now: 0,
            reads: vec![0; n],
            writes: vec![0; n],
            copies: 0,
            deliveries: 0,
            max_hops: 0,
            tracked: Vec::new(),
            by_id: HashMap::new(),
            crashed_stats: Stats::default(),
            hostile,
            forged: HashSet::new(),
            forged_deliveries: 0,
            withheld: 0,
            injected: 0,
            inflated: HashMap::new(),
        }
    }

    fn up(&self, i: usize) -> bool {
        !self.dead[i] && !self.down[i]
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
        let seed = sub_seed(
            self.cfg.seed,
            1 << 40 | u64::from(self.restarts[i]) << 32 | i as u64,
        );
        let rng = SmallRng::seed_from_u64(seed);
        let mut e = Engine::with_shared_config(self.config.clone(), me, self.view(i), rng)?;
        if let Some(keys) = &self.keys {
            e = e.with_signing_key(keys[i].clone())?;
        }
        Ok(Box::new(e))
    }

    fn run(mut self) -> Result<Report, SimError> {
        let count = self.cfg.broadcasts.max(1);
        let interval = nanos(self.cfg.interval);
        if self.cfg.churn_percent > 0.0 {
            self.churn(0);
        }
        if interval == 0 {
            for index in 0..count {
                self.start_broadcast(index)?;
                self.drain_queue()?;
            }
        } else {
            for index in 0..count {
                self.queue
                    .push(u64::from(index) * interval, EventKind::Broadcast { index });
            }
            if self.cfg.churn_percent > 0.0 {
                self.queue
                    .push(nanos(self.cfg.churn_period), EventKind::Churn { period: 1 });
            }
            self.drain_queue()?;
        }
        Ok(self.report())
    }

    fn drain_queue(&mut self) -> Result<(), SimError> {
        while let Some(ev) = self.queue.pop() {
            self.now = ev.at;
            match ev.kind {
                EventKind::Arrive { from, to, msg } => {
                    self.arrive(from as usize, to as usize, msg)?
                }
                EventKind::Timer { node } => self.timer(node as usize, ev.at)?,
                EventKind::Refused { from, to } => self.refused(from as usize, to as usize)?,
                EventKind::Broadcast { index } => self.start_broadcast(index)?,
                EventKind::Churn { period } => {
                    self.churn(period);
                    // Churn goes on until the last broadcast has had two periods to settle.
                    let last_start =
                        u64::from(self.cfg.broadcasts.max(1) - 1) * nanos(self.cfg.interval);
                    let period_ns = nanos(self.cfg.churn_period);
                    let next = u64::from(period + 1) * period_ns;
                    if next <= last_start + 2 * period_ns {
                        self.queue
                            .push(next, EventKind::Churn { period: period + 1 });
                    }
                }
            }
        }
        Ok(())
    }

    fn start_broadcast(&mut self, _index: u32) -> Result<(), SimError> {
        let o = self.cfg.originator;
        let n = self.cfg.nodes;
        let live = (0..n).filter(|&i| self.up(i)).count();
        let mut engine = self.take_engine(o)?;
        let payload = Bytes::from(vec![0xabu8; self.cfg.payload_size]);
        let r = engine.broadcast(Duration::from_nanos(self.now), payload, self.now / 1000);
        if let Ok(id) = r {
            let mut had_at = vec![u64::MAX; n];
            had_at[o] = self.now;
            self.by_id.insert(id, self.tracked.len());
            self.tracked.push(Tracked {
                start: self.now,
                had_at,
                last: self.now,
                sends: 0,
                live,
            });
        }
        self.drain(o, &mut engine);
        self.engines[o] = Some(engine);
        r?;
        Ok(())
    }

    /// A fresh random set of nodes is down for churn period `period`; a node going down loses
    /// its engine (a crash), a node coming up starts a fresh one when it first gets an event.
    fn churn(&mut self, period: u32) {
        let n = self.cfg.nodes;
        let count = ((n as f64) * self.cfg.churn_percent / 100.0).round() as usize;
        let mut others: Vec<usize> = (0..n).filter(|&i| i != self.cfg.originator).collect();
        let (picked, _) = others.partial_shuffle(&mut self.churn_rng, count.min(n - 1));
        let mut down = vec![false; n];
        for &i in picked.iter() {
            down[i] = true;
        }
        for (i, &d) in down.iter().enumerate() {
            if d && !self.down[i] {
                if let Some(e) = self.engines[i].take() {
                    self.crashed_stats.add(e.stats());
                }
                self.restarts[i] += 1;
                self.timer_at[i] = u64::MAX;
            }
        }
        self.down = down;
        let p = period as usize;
        if self.down_history.len() <= p {
            self.down_history.resize(p + 1, Vec::new());
        }
        self.down_history[p] = self.down.clone();
    }

    /// Marks activity of the broadcast a message belongs to.
    fn touch(&mut self, msg: &BroadcastMessage, sent: bool) {
        let id = match msg {
            BroadcastMessage::Gossip(g) => g.id,
            BroadcastMessage::Ack { id, .. }
            | BroadcastMessage::Igyw { id, .. }
            | BroadcastMessage::IgywReply { id, .. } => *id,
            _ => return,
        };
        if let Some(&b) = self.by_id.get(&id) {
            let t = &mut self.tracked[b];
            t.last = t.last.max(self.now);
            if sent && matches!(msg, BroadcastMessage::Gossip(_)) {
                t.sends += 1;
            }
        }
    }

    fn arrive(&mut self, from: usize, to: usize, msg: BroadcastMessage) -> Result<(), SimError> {
        if !self.up(to) {
            if self.cfg.failure == Failure::Refused {
                let at = self.now + self.link_delay();
                self.queue.push(
                    at,
                    EventKind::Refused {
                        from: from as u32,
                        to: to as u32,
                    },
                );
            }
            return Ok(());
        }
        self.touch(&msg, false);
        if matches!(
            msg,
            BroadcastMessage::Gossip(_) | BroadcastMessage::Direct { .. }
        ) {
            self.reads[to] += 1;
            self.copies += 1;
        }
        let mut msg = msg;
        if let BroadcastMessage::Ack { id, level_or_range } = &mut msg {
            if let Some(lor) = self.inflated.get(&(*id, to, from)) {
                *level_or_range = *lor;
            }
        }
        let mut engine = self.take_engine(to)?;
        let from_addr = self.list.as_slice()[from];
        // A refused message is counted in the engine's stats; the run goes on.
        let _ = engine.handle_message(Duration::from_nanos(self.now), from_addr, msg);
        self.drain(to, &mut engine);
        self.engines[to] = Some(engine);
        Ok(())
    }

    fn refused(&mut self, from: usize, to: usize) -> Result<(), SimError> {
        if !self.up(from) {
            return Ok(());
        }
        let mut engine = self.take_engine(from)?;
        let to_addr = self.list.as_slice()[to];
        engine.peer_unreachable(Duration::from_nanos(self.now), to_addr);
        self.drain(from, &mut engine);
        self.engines[from] = Some(engine);
        Ok(())
    }

    fn timer(&mut self, node: usize, at: u64) -> Result<(), SimError> {
        if self.timer_at[node] != at || !self.up(node) {
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
        drive::drain(engine, &mut NodeOut { sim: self, i });
        if let Some(t) = engine.poll_timeout() {
            let t = nanos(t);
            if t < self.timer_at[i] {
                self.timer_at[i] = t;
                self.queue.push(t, EventKind::Timer { node: i as u32 });
            }
        }
    }

    /// Made-up copies counted in `sends` (payload-bearing gossip; flood directs are not).
    fn injected_gossip(&self) -> u64 {
        if self.cfg.hostile == Hostile::Forge {
            self.injected
        } else {
            0
        }
    }

    /// A forging or flooding node `i` that just got broadcast `id` sends its own copies.
    fn inject(&mut self, i: usize, id: MessageId) {
        let forge = match self.cfg.hostile {
            Hostile::Forge => true,
            Hostile::Flood => false,
            _ => return,
        };
        let n = self.cfg.nodes;
        let me = self.list.as_slice()[i];
        for _ in 0..hostile::INJECTIONS {
            let j = self.rng.gen_range(0..n);
            if j == i {
                continue;
            }
            let id = MessageId {
                origin: if forge { id.origin } else { me },
                nonce: self.rng.gen(),
            };
            let payload = Bytes::from_static(b"not from the origin");
            let origin_time_us = self.now / 1000;
            let strategy = self.config.strategy;
            // Signed with the hostile node's own key: valid for its own (flood) ids, a
            // forgery in another's name.
            let signature = self.keys.as_ref().map(|k| {
                let hash = crate::wire::payload_hash(&payload);
                crate::broadcast::sign_for_sim(&k[i], &id, origin_time_us, strategy, &hash)
            });
            self.injected += 1;
            let to = self.list.as_slice()[j];
            if !forge {
                // Fresh ids of its own, each delivered wherever it lands and never forwarded.
                self.send(i, to, BroadcastMessage::Direct { id, payload });
                continue;
            }
            self.forged.insert(id);
            let g = crate::wire::Gossip {
                id,
                level_or_range: u32::from(strategy == Strategy::Exact),
                strategy,
                route: crate::wire::Route::Tree,
                origin_time_us,
                hops: 1,
                payload,
                signature,
            };
            self.send(i, to, BroadcastMessage::Gossip(g));
        }
    }

    fn link_delay(&mut self) -> u64 {
        let jitter = nanos(self.cfg.jitter);
        let extra = if jitter > 0 {
            self.rng.gen_range(0..=jitter)
        } else {
            0
        };
        nanos(self.cfg.latency) + extra
    }

    fn send(&mut self, from: usize, to: Address, msg: BroadcastMessage) {
        let Some(j) = self.list.position(&to) else {
            return;
        };
        self.touch(&msg, true);
        if matches!(
            msg,
            BroadcastMessage::Gossip(_) | BroadcastMessage::Direct { .. }
        ) {
            self.writes[from] += 1;
        }
        if self.cfg.loss_percent > 0.0 && self.rng.gen::<f64>() * 100.0 < self.cfg.loss_percent {
            return;
        }
        let at = self.now + self.link_delay();
        self.queue.push(
            at,
            EventKind::Arrive {
                from: from as u32,
                to: j as u32,
                msg,
            },
        );
    }

    /// Whether node `i` was up for all of `[start, end]`.
    fn stable(&self, i: usize, start: u64, end: u64) -> bool {
        if self.dead[i] {
            return false;
        }
        let period = nanos(self.cfg.churn_period).max(1);
        let (first, last) = ((start / period) as usize, (end / period) as usize);
        (first..=last).all(|p| {
            // Past the last churn period the last down set stays in force.
            let set = self.down_history.get(p).or(self.down_history.last());
            set.is_none_or(|d| !d[i])
        })
    }

    fn broadcast_report(&self, t: &Tracked) -> BroadcastReport {
        let n = self.cfg.nodes;
        let had = |i: usize| t.had_at[i] != u64::MAX;
        let stable: Vec<usize> = (0..n)
            .filter(|&i| self.stable(i, t.start, t.last))
            .collect();
        let stable_covered = stable.iter().filter(|&&i| had(i)).count();
        let time_to_full_ms = (stable_covered == stable.len()).then(|| {
            let full = stable.iter().map(|&i| t.had_at[i]).max().unwrap_or(t.start);
            (full - t.start) as f64 / 1e6
        });
        BroadcastReport {
            covered: (0..n).filter(|&i| had(i)).count(),
            honest_covered: (0..n)
                .filter(|&i| had(i) && !self.hostile[i] && !self.dead[i])
                .count(),
            live: t.live,
            stable: stable.len(),
            stable_covered,
            sends: t.sends,
            time_to_full_ms,
        }
    }

    fn report(&self) -> Report {
        let mut s = self.crashed_stats.clone();
        for e in self.engines.iter().flatten() {
            s.add(e.stats());
        }
        let per_broadcast: Vec<BroadcastReport> = self
            .tracked
            .iter()
            .map(|t| self.broadcast_report(t))
            .collect();
        let b = self.cfg.broadcasts.max(1);
        let c = self.cfg;
        let rmr = if self.deliveries == 0 {
            0.0
        } else {
            self.copies as f64 / self.deliveries as f64 - 1.0
        };
        let covered = per_broadcast.iter().map(|r| r.covered).min().unwrap_or(0);
        let covered_sum: usize = per_broadcast.iter().map(|r| r.covered).sum();
        let time_to_full_ms = per_broadcast
            .iter()
            .try_fold(0.0f64, |w, r| r.time_to_full_ms.map(|t| w.max(t)));
        let live = (0..c.nodes).filter(|&i| !self.dead[i]).count();
        let honest = (0..c.nodes)
            .filter(|&i| !self.dead[i] && !self.hostile[i])
            .count();
        let honest_covered = per_broadcast
            .iter()
            .map(|r| r.honest_covered)
            .min()
            .unwrap_or(0);
        Report {
            nodes: c.nodes,
            live,
            covered,
            honest,
            honest_covered,
            forged_deliveries: self.forged_deliveries,
            sends: s.gossip_sent - self.withheld + self.injected_gossip(),
            engine: s,
            max_hops: self.max_hops,
            rmr,
            time_to_full_ms,
            covered_mean: covered_sum as f64 / f64::from(b),
            dead: c.nodes - live,
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
                failure: c.failure,
                churn_percent: c.churn_percent,
                churn_period_ms: c.churn_period.as_secs_f64() * 1e3,
                interval_ms: c.interval.as_secs_f64() * 1e3,
                signatures: c.signatures,
                hostile_percent: c.hostile_percent,
                hostile: c.hostile,
            },
            per_broadcast,
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
