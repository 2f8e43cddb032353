//! Full nodes under simulated WAN hardship: every node is a real [`Node`] (transport, driver,
//! engine) on its own turmoil host, so latency, loss, partitions and crashes are scripted and
//! time is simulated. The same seed replays the same run.
//!
//! The building blocks ([`identity`], [`node_config`], [`builder`]) serve tests that script
//! their own hosts; [`run`] plays one of the [`Scenario`]s and measures it like LocalNet does
//! (`examples/wan.rs` prints its [`Report`]).

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use raintree_proto::broadcast::{Config, Stats};
use raintree_proto::Address;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use tokio::sync::watch;

use crate::net::Net;
use crate::node::{Node, NodeConfig, PeerEntry};
use crate::transport::Identity;

/// The port every simulated node listens on.
pub const PORT: u16 = 7000;

/// The turmoil host name of node `i`.
pub fn host_name(i: usize) -> String {
    format!("n{i}")
}

/// Node `i`'s identity under `seed`: the same every time, so a restarted host is the same peer.
pub fn identity(seed: u64, i: usize) -> Identity {
    let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    Identity::from_secret_bytes(&secret)
}

/// The config of node `i` of `n`, for use inside its turmoil host: simulated sockets, every
/// other node as a peer, a seeded engine and payload limits that agree.
pub fn node_config(seed: u64, i: usize, n: usize, protocol: &Config) -> NodeConfig {
    let peers = (0..n)
        .map(|j| PeerEntry {
            address: identity(seed, j).address(),
            addr: SocketAddr::new(turmoil::lookup(host_name(j)), PORT),
        })
        .collect();
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
    let mut cfg = NodeConfig::new(identity(seed, i), listen, peers);
    cfg.transport.net = Net::Turmoil;
    cfg.transport.max_payload = protocol.max_payload;
    cfg.protocol = protocol.clone();
    cfg.seed = Some(seed.wrapping_add(i as u64));
    cfg
}

/// A turmoil builder for links of `latency` plus up to `jitter` one way (turmoil's
/// exponential spread: most segments near `latency`), seeded, running at most `limit` of
/// simulated time.
pub fn builder(
    latency: Duration,
    jitter: Duration,
    seed: u64,
    limit: Duration,
) -> turmoil::Builder {
    let mut b = turmoil::Builder::new();
    b.min_message_latency(latency)
        .max_message_latency(latency + jitter)
        .rng_seed(seed)
        // A fixed simulated wall clock, so origin timestamps replay too.
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .simulation_duration(limit)
        // Socket buffers in segments: large enough that a burst never resets a connection.
        .tcp_capacity(1 << 16);
    b
}

/// What happens to the network while it broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Steady WAN links.
    Steady,
    /// The nodes split in two halves that cannot reach each other from a third into the
    /// broadcast phase for a third of it (at least 2 s); segments wait on the links (as TCP
    /// retransmits) and flow on healing.
    Partition,
    /// 10% of the nodes crash a third of the way in and restart, same identity, a third of the
    /// phase (at least 2 s) later.
    Crash,
    /// 10% of the nodes' applications take 50 ms to read each delivery.
    SlowApp,
    /// Every node drops 10% of the peers from its list a third of the way in and adds them
    /// back a third of the phase (at least 2 s) later.
    PeerChange,
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "steady" => Scenario::Steady,
            "partition" => Scenario::Partition,
            "crash" => Scenario::Crash,
            "slow-app" => Scenario::SlowApp,
            "peer-change" => Scenario::PeerChange,
            _ => return Err(format!("unknown scenario {s:?}")),
        })
    }
}

impl Scenario {
    /// The scenario's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Partition => "partition",
            Scenario::Crash => "crash",
            Scenario::SlowApp => "slow-app",
            Scenario::PeerChange => "peer-change",
        }
    }
}

/// One WAN run.
#[derive(Clone, Debug)]
pub struct WanConfig {
    /// Full nodes, each on its own host.
    pub nodes: usize,
    /// Least one-way delay of a segment.
    pub latency: Duration,
    /// Most extra one-way delay.
    pub jitter: Duration,
    /// Percent of socket writes "lost", each costing a retransmission timeout (see
    /// [`crate::net::sim::set_loss`]).
    pub loss_percent: f64,
    /// What happens meanwhile.
    pub scenario: Scenario,
    /// Broadcasts, from rotating originators.
    pub messages: usize,
    /// Time between broadcasts.
    pub interval: Duration,
    /// Payload bytes per broadcast.
    pub payload: usize,
    /// Seeds identities, engines, the network and the scenario.
    pub seed: u64,
    /// Protocol settings of every node.
    pub protocol: Config,
}

impl WanConfig {
    /// Defaults: exact strategy, 1 KiB payloads 20 ms apart, 200 ms retransmission timeout.
    pub fn new(nodes: usize, scenario: Scenario, messages: usize, seed: u64) -> Self {
        Self {
            nodes,
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
            loss_percent: 0.0,
            scenario,
            messages,
            interval: Duration::from_millis(20),
            payload: 1024,
            seed,
            protocol: Config::default(),
        }
    }
}

/// TCP's least retransmission timeout (Linux): what one lost segment costs.
pub const RTO: Duration = Duration::from_millis(200);

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latency {
    /// Median over complete messages of the time until the last expected node delivered.
    pub p50: f64,
    /// 99th percentile of the same.
    pub p99: f64,
    /// The slowest complete message.
    pub max: f64,
}

/// What a run measured; the keys of LocalNet's report where they apply.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Nodes simulated.
    pub nodes: usize,
    /// Broadcasts sent.
    pub messages: usize,
    /// Deliveries over expected deliveries (1.0 = every expected node got every message).
    /// A node is expected to get a message unless it was crashed or out of the peer lists
    /// while that message spread.
    pub coverage: f64,
    /// The worst message's coverage.
    pub min_message_coverage: f64,
    /// Messages that reached every expected node.
    pub complete_messages: usize,
    /// Time to full coverage, over the complete messages (simulated time).
    pub latency_ms: Latency,
    /// Payload copies received per delivery (1.0 = no duplicate).
    pub copies_per_delivery: f64,
    /// The engines' counters summed over every node and incarnation.
    pub engine: Stats,
    /// Messages an engine ACKed whose delivery the application never got, although the node
    /// shut down gracefully (crashes excluded).
    pub shutdown_lost_acked: u64,
    /// Simulated milliseconds from the first broadcast to the end of the graceful shutdown.
    pub sim_ms: u64,
}

/// Broadcasts start once every node has had time to listen.
const WARMUP: Duration = Duration::from_millis(500);
/// The shortest disturbance: longer than an ACK deadline, a dial back-off and a handshake.
const DISTURBANCE: Duration = Duration::from_secs(2);
/// How long after the last broadcast the run waits before shutting down.
const SETTLE: Duration = Duration::from_secs(5);
/// The graceful shutdown's deadline.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// What every host writes down; the run reads it afterwards.
struct Log {
    /// Simulated time each message was broadcast at.
    sent: Vec<Option<Duration>>,
    /// First delivery time per node and message.
    got: Vec<Vec<Option<Duration>>>,
    /// Counters of each node's earlier incarnations (before a crash).
    before: Vec<Stats>,
    /// Counters of each node's current incarnation.
    now: Vec<Stats>,
    /// Deliveries the application read in the current incarnation.
    app: Vec<u64>,
    /// Hosts whose software finished its graceful shutdown.
    done: usize,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// The plan every host follows: who broadcasts what when, who is slow, who is dropped.
struct Plan {
    cfg: WanConfig,
    /// Originator of each message.
    origin: Vec<usize>,
    /// Nodes that crash (crash scenario), are slow (slow-app) or are dropped (peer-change).
    special: Vec<usize>,
    /// Start and end of the scenario's disturbance.
    window: (Duration, Duration),
}

impl Plan {
    fn new(cfg: &WanConfig) -> Plan {
        let n = cfg.nodes;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let tenth = (n / 10).max(1).min(n.saturating_sub(1));
        let special: Vec<usize> = match cfg.scenario {
            Scenario::Steady | Scenario::Partition => Vec::new(),
            _ => order[..tenth].to_vec(),
        };
        // Originators rotate over the nodes that stay up and listed throughout.
        let steady: Vec<usize> = order
            .iter()
            .copied()
            .filter(|i| !special.contains(i))
            .collect();
        let origin = (0..cfg.messages)
            .map(|k| steady[k % steady.len()])
            .collect();
        let phase = cfg.interval * cfg.messages as u32;
        let start = WARMUP + phase / 3;
        let window = (start, start + (phase / 3).max(DISTURBANCE));
        Plan {
            cfg: cfg.clone(),
            origin,
            special,
            window,
        }
    }

    fn at(&self, k: usize) -> Duration {
        WARMUP + self.cfg.interval * k as u32
    }

    /// Whether node `i` is expected to get message `k`, sent at `t`.
    fn expected(&self, i: usize, k: usize, t: Duration) -> bool {
        if self.origin[k] == i {
            return false;
        }
        match self.cfg.scenario {
            Scenario::Crash | Scenario::PeerChange if self.special.contains(&i) => {
                // Out from the window's start to its end (and a crashed node's restart takes
                // its peers' back-off to be noticed): messages sent then may miss it.
                let spread = Duration::from_secs(2);
                t + spread < self.window.0 || t > self.window.1 + spread
            }
            _ => true,
        }
    }
}

/// Plays `cfg.scenario` on `cfg.nodes` full nodes and measures it.
pub fn run(cfg: &WanConfig) -> Result<Report, String> {
    if cfg.nodes < 2 || cfg.messages == 0 {
        return Err("need at least 2 nodes and 1 message".into());
    }
    crate::net::sim::set_loss(cfg.loss_percent, RTO, cfg.seed);
    let plan = Rc::new(Plan::new(cfg));
    let n = cfg.nodes;
    let log = Rc::new(RefCell::new(Log {
        sent: vec![None; cfg.messages],
        got: vec![vec![None; cfg.messages]; n],
        before: vec![Stats::default(); n],
        now: vec![Stats::default(); n],
        app: vec![0; n],
        done: 0,
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let end = plan.at(cfg.messages).max(plan.window.1) + SETTLE;
    let limit = end + SHUTDOWN * 4;
    let mut sim = builder(cfg.latency, cfg.jitter, cfg.seed, limit).build();
    for i in 0..n {
        let (plan, log, stop) = (Rc::clone(&plan), Rc::clone(&log), stop_rx.clone());
        sim.host(host_name(i), move || {
            host(Rc::clone(&plan), Rc::clone(&log), stop.clone(), i)
        });
    }
    let hosts: Vec<String> = (0..n).map(host_name).collect();
    let (half_a, half_b) = hosts.split_at(n / 2);
    let mut disturbed = false;
    let mut healed = false;
    let mut stopping = false;
    let finished = loop {
        let t = sim.elapsed();
        if !disturbed && t >= plan.window.0 {
            disturbed = true;
            match cfg.scenario {
                Scenario::Partition => each_pair(half_a, half_b, |a, b| sim.hold(a, b)),
                Scenario::Crash => {
                    for &i in &plan.special {
                        sim.crash(host_name(i));
                    }
                }
                _ => {}
            }
        }
        if !healed && t >= plan.window.1 {
            healed = true;
            match cfg.scenario {
                Scenario::Partition => each_pair(half_a, half_b, |a, b| sim.release(a, b)),
                Scenario::Crash => {
                    for &i in &plan.special {
                        sim.bounce(host_name(i));
                    }
                }
                _ => {}
            }
        }
        if !stopping && t >= end {
            stopping = true;
            let _ = stop_tx.send(true);
        }
        if stopping && log.borrow().done == n {
            break t;
        }
        sim.step().map_err(|e| e.to_string())?;
    };
    let log = log.borrow();
    Ok(measure(&plan, &log, finished))
}

fn each_pair(a: &[String], b: &[String], mut f: impl FnMut(&str, &str)) {
    for x in a {
        for y in b {
            f(x, y);
        }
    }
}

/// One node's software: start, broadcast its share on schedule, read deliveries (slowly if
/// it is a slow node), change its peer list if told, shut down gracefully when asked.
async fn host(
    plan: Rc<Plan>,
    log: Rc<RefCell<Log>>,
    mut stop: watch::Receiver<bool>,
    i: usize,
) -> turmoil::Result {
    let cfg = &plan.cfg;
    let n = cfg.nodes;
    let node_cfg = node_config(cfg.seed, i, n, &cfg.protocol);
    let (node, mut streams) = Node::start(node_cfg).await?;
    {
        let mut l = log.borrow_mut();
        let prev = std::mem::take(&mut l.now[i]);
        l.before[i].add(&prev);
        l.app[i] = 0;
    }
    let slow = cfg.scenario == Scenario::SlowApp && plan.special.contains(&i);
    // The scheduled broadcasts of this node (those still ahead after a restart).
    let mine: Vec<usize> = (0..cfg.messages)
        .filter(|&k| plan.origin[k] == i && plan.at(k) >= now())
        .collect();
    let sender = {
        let (node, log, plan) = (node.clone(), Rc::clone(&log), Rc::clone(&plan));
        tokio::task::spawn_local(async move {
            for k in mine {
                sleep_until_sim(plan.at(k)).await;
                let mut payload = vec![0u8; plan.cfg.payload.max(8)];
                payload[..8].copy_from_slice(&(k as u64).to_be_bytes());
                log.borrow_mut().sent[k] = Some(now());
                if node.broadcast(Bytes::from(payload)).await.is_err() {
                    return;
                }
            }
        })
    };
    let peer_change = (cfg.scenario == Scenario::PeerChange).then(|| {
        let (node, plan) = (node.clone(), Rc::clone(&plan));
        tokio::task::spawn_local(async move {
            let dropped: Vec<Address> = plan
                .special
                .iter()
                .map(|&j| identity(plan.cfg.seed, j).address())
                .collect();
            let all = node.peers();
            sleep_until_sim(plan.window.0).await;
            let _ = node.remove_peers(&dropped).await;
            sleep_until_sim(plan.window.1).await;
            let _ = node.add_peers(&all).await;
        })
    });
    let record = |log: &RefCell<Log>, payload: &Bytes, stats: Stats| {
        let mut l = log.borrow_mut();
        l.app[i] += 1;
        l.now[i] = stats;
        if let Some(k) = payload
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| u64::from_be_bytes(b) as usize)
            .filter(|&k| k < l.sent.len())
        {
            let slot = &mut l.got[i][k];
            if slot.is_none() {
                *slot = Some(now());
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            d = streams.deliveries.recv() => match d {
                Some(d) => {
                    record(&log, &d.payload, node.stats());
                    if slow {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                None => break,
            },
        }
    }
    sender.abort();
    if let Some(p) = peer_change {
        p.abort();
    }
    node.shutdown(SHUTDOWN).await;
    // Whatever the engine delivered before it stopped is still read out here.
    while let Some(d) = streams.deliveries.recv().await {
        record(&log, &d.payload, node.stats());
    }
    let mut l = log.borrow_mut();
    l.now[i] = node.stats();
    l.done += 1;
    Ok(())
}

async fn sleep_until_sim(at: Duration) {
    let t = now();
    if at > t {
        tokio::time::sleep(at - t).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn measure(plan: &Plan, log: &Log, sim_end: Duration) -> Report {
    let n = plan.cfg.nodes;
    let mut expected_total = 0u64;
    let mut got_total = 0u64;
    let mut min_cov = 1.0f64;
    let mut complete = 0;
    let mut lat = Vec::new();
    let mut sent = 0;
    for (k, at) in log.sent.iter().enumerate() {
        let Some(at) = *at else { continue };
        sent += 1;
        let expected: Vec<usize> = (0..n).filter(|&i| plan.expected(i, k, at)).collect();
        let got: Vec<Duration> = expected.iter().filter_map(|&i| log.got[i][k]).collect();
        expected_total += expected.len() as u64;
        got_total += got.len() as u64;
        let cov = if expected.is_empty() {
            1.0
        } else {
            got.len() as f64 / expected.len() as f64
        };
        min_cov = min_cov.min(cov);
        if got.len() == expected.len() {
            complete += 1;
            let last = got.iter().max().copied().unwrap_or(at);
            lat.push((last.saturating_sub(at)).as_secs_f64() * 1e3);
        }
    }
    lat.sort_by(f64::total_cmp);
    let mut total = Stats::default();
    let mut lost = 0;
    for i in 0..n {
        total.add(&log.before[i]);
        total.add(&log.now[i]);
        lost += log.now[i].deliveries.saturating_sub(log.app[i]);
    }
    let round = |x: f64| (x * 10.0).round() / 10.0;
    Report {
        nodes: n,
        messages: sent,
        coverage: if expected_total == 0 {
            1.0
        } else {
            (got_total as f64 / expected_total as f64 * 1e4).round() / 1e4
        },
        min_message_coverage: (min_cov * 1e4).round() / 1e4,
        complete_messages: complete,
        latency_ms: Latency {
            p50: round(percentile(&lat, 50.0)),
            p99: round(percentile(&lat, 99.0)),
            max: round(lat.last().copied().unwrap_or(0.0)),
        },
        copies_per_delivery: if total.deliveries == 0 {
            0.0
        } else {
            ((total.deliveries + total.duplicates) as f64 / total.deliveries as f64 * 1e3).round()
                / 1e3
        },
        engine: total,
        shutdown_lost_acked: lost,
        sim_ms: sim_end.saturating_sub(WARMUP).as_millis() as u64,
    }
}
