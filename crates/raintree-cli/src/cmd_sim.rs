//! `raintree sim`: one simulated network, reported as text or one JSON object.

use std::time::Duration;

use raintree_proto::broadcast::{Config, Redundancy};
use raintree_proto::sim::{self, Failure, Hostile, Report, SimConfig};
use raintree_proto::wire::Strategy;

/// A switch written `on` or `off`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl OnOff {
    /// True for `on`.
    pub fn on(self) -> bool {
        self == OnOff::On
    }
}

/// Options of `raintree sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Network size N.
    #[arg(long)]
    pub nodes: usize,
    /// Tree strategy: reference or exact (the node's default, exact).
    #[arg(long, default_value = "exact")]
    pub strategy: Strategy,
    /// Tree sends expect ACKs (with adjust/resend on timeout).
    #[arg(long, value_enum, default_value = "on")]
    pub acks: OnOff,
    /// Redundancy layer: off, left, right or both.
    #[arg(long, default_value = "off")]
    pub redundancy: Redundancy,
    /// IGYW clean-up layer.
    #[arg(long, value_enum, default_value = "off")]
    pub cleanup: OnOff,
    /// Percentage of dead nodes (never the originator).
    #[arg(long, default_value_t = 0.0)]
    pub dead_percent: f64,
    /// Percentage of messages lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss_percent: f64,
    /// Percentage of the other peers each node knows.
    #[arg(long, default_value_t = 100.0)]
    pub partial_view_percent: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Broadcasts, run one after another from the same originator. Counters are totals;
    /// covered, max hops and time to full are the worst broadcast's; rmr is overall.
    #[arg(long, default_value_t = 1)]
    pub broadcasts: u32,
    /// Sorted position of the originator.
    #[arg(long, default_value_t = 0)]
    pub originator: usize,
    /// Forward every received tree copy, like the Go reference (reproduces SPEC 2 tables).
    #[arg(long)]
    pub forward_duplicates: bool,
    /// List reads and writes per node.
    #[arg(long)]
    pub per_node: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Fixed one-way link latency in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub latency_ms: f64,
    /// Extra uniform random latency, up to this many milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub jitter_ms: f64,
    /// ACK deadline in milliseconds before any round trip is measured.
    #[arg(long, default_value_t = 500.0)]
    pub ack_timeout_ms: f64,
    /// Shortest adaptive ACK deadline in milliseconds.
    #[arg(long, default_value_t = 200.0)]
    pub min_ack_timeout_ms: f64,
    /// Longest adaptive ACK deadline in milliseconds.
    #[arg(long, default_value_t = 2000.0)]
    pub max_ack_timeout_ms: f64,
    /// Milliseconds a failed peer is passed over unless it answers a probe first.
    #[arg(long, default_value_t = 300000.0)]
    pub suspicion_ttl_ms: f64,
    /// Delay between tree duty and the first IGYW offer, in milliseconds.
    #[arg(long, default_value_t = 1000.0)]
    pub cleanup_delay_ms: f64,
    /// IGYW reply deadline in milliseconds.
    #[arg(long, default_value_t = 500.0)]
    pub igyw_timeout_ms: f64,
    /// Unresponsive neighbours an IGYW chain skips before it stops.
    #[arg(long, default_value_t = 8)]
    pub igyw_skip_limit: u32,
    /// HAVE answers in a row an IGYW chain passes before it stops (1: stop at the first).
    #[arg(long, default_value_t = Config::default().igyw_have_limit)]
    pub igyw_have_limit: u32,
    /// Payload size in bytes (`--size`, as in LocalNet; `--payload-size` is an alias).
    #[arg(long = "size", alias = "payload-size", default_value_t = 32)]
    pub payload_size: usize,
    /// What a sender sees of a message to a down node: silent (it vanishes) or refused (the
    /// sender is told one link latency later, like a killed process on a live host).
    #[arg(long, value_enum, default_value = "silent")]
    pub failure: FailureArg,
    /// Percentage of nodes down in each churn period (never the originator).
    #[arg(long, default_value_t = 0.0)]
    pub churn_percent: f64,
    /// Length of a churn period in milliseconds of simulated time.
    #[arg(long, default_value_t = 1000.0)]
    pub churn_period_ms: f64,
    /// Milliseconds between broadcast starts; 0 starts each after the previous one settles.
    #[arg(long, default_value_t = 0.0)]
    pub interval_ms: f64,
    /// Every node signs and verifies broadcasts with a real Ed25519 key (as a node always
    /// does); off by default, so very large runs stay fast.
    #[arg(long)]
    pub signatures: bool,
    /// Percentage of hostile nodes (never the originator nor a dead node).
    #[arg(long, default_value_t = 0.0)]
    pub hostile_percent: f64,
    /// What hostile nodes do: blackhole (ACK, forward nothing, answer HAVE), forge (copies
    /// in the originator's name), inflate (largest accepted ranges), flood (fresh ids).
    #[arg(long, default_value = "blackhole")]
    pub hostile: Hostile,
}

/// `--failure`: what a sender sees of a message to a down node.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureArg {
    /// The message vanishes.
    Silent,
    /// The connection is refused.
    Refused,
}

fn millis(name: &str, ms: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(ms / 1e3)
        .map_err(|_| format!("--{name} must be a non-negative number of milliseconds, got {ms}"))
}

impl Args {
    /// The simulation these options describe.
    pub fn sim_config(&self) -> Result<SimConfig, String> {
        Ok(SimConfig {
            nodes: self.nodes,
            protocol: Config {
                strategy: self.strategy,
                acks: self.acks.on(),
                ack_timeout: millis("ack-timeout-ms", self.ack_timeout_ms)?,
                min_ack_timeout: millis("min-ack-timeout-ms", self.min_ack_timeout_ms)?,
                max_ack_timeout: millis("max-ack-timeout-ms", self.max_ack_timeout_ms)?,
                suspicion_ttl: millis("suspicion-ttl-ms", self.suspicion_ttl_ms)?,
                redundancy: self.redundancy,
                cleanup: self.cleanup.on(),
                igyw_timeout: millis("igyw-timeout-ms", self.igyw_timeout_ms)?,
                igyw_skip_limit: self.igyw_skip_limit,
                igyw_have_limit: self.igyw_have_limit,
                cleanup_delay: millis("cleanup-delay-ms", self.cleanup_delay_ms)?,
                max_payload: self.payload_size.max(Config::default().max_payload),
                forward_duplicates: self.forward_duplicates,
                ..Config::default()
            },
            latency: millis("latency-ms", self.latency_ms)?,
            jitter: millis("jitter-ms", self.jitter_ms)?,
            loss_percent: self.loss_percent,
            dead_percent: self.dead_percent,
            partial_view_percent: self.partial_view_percent,
            seed: self.seed,
            broadcasts: self.broadcasts,
            originator: self.originator,
            payload_size: self.payload_size,
            per_node: self.per_node,
            failure: match self.failure {
                FailureArg::Silent => Failure::Silent,
                FailureArg::Refused => Failure::Refused,
            },
            churn_percent: self.churn_percent,
            churn_period: millis("churn-period-ms", self.churn_period_ms)?,
            interval: millis("interval-ms", self.interval_ms)?,
            signatures: self.signatures,
            hostile_percent: self.hostile_percent,
            hostile: self.hostile,
        })
    }
}

/// Runs the simulation and prints its report.
pub fn run(a: &Args) -> Result<(), String> {
    let report = sim::run(&a.sim_config()?).map_err(|e| e.to_string())?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_text(&report);
    }
    Ok(())
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn print_text(r: &Report) {
    let c = &r.config;
    println!(
        "strategy {}, acks {}, redundancy {}, cleanup {}{}; seed {}",
        c.strategy,
        if c.acks { "on" } else { "off" },
        c.redundancy,
        if c.cleanup { "on" } else { "off" },
        if c.forward_duplicates {
            ", forwarding duplicates"
        } else {
            ""
        },
        c.seed
    );
    println!(
        "nodes {}  dead {}  live {}  loss {}%  partial view {}%  latency {} ms + up to {} ms",
        r.nodes, r.dead, r.live, c.loss_percent, c.partial_view_percent, c.latency_ms, c.jitter_ms
    );
    println!(
        "covered {} of {} live ({:.2}%){}",
        r.covered,
        r.live,
        percent(r.covered, r.live),
        if r.engine.broadcasts > 1 {
            format!(
                ", worst of {} broadcasts (mean {:.1})",
                r.engine.broadcasts, r.covered_mean
            )
        } else {
            String::new()
        }
    );
    println!(
        "sends {}  acks {}  resends {}  igyw {}  redundancy {}  cleanup {}",
        r.sends,
        r.engine.acks_sent,
        r.engine.resends,
        r.engine.igyw_sent,
        r.engine.redundancy_sends,
        r.engine.cleanup_sends
    );
    println!(
        "ack timeouts {}  give-ups {}  duplicates {}  max hops {}  rmr {:.3}",
        r.engine.ack_timeouts, r.engine.give_ups, r.engine.duplicates, r.max_hops, r.rmr
    );
    println!(
        "unreachable signals {}  skips {}  probes {}  re-splits {}",
        r.engine.unreachable, r.engine.skips, r.engine.probes, r.engine.resplits
    );
    if c.hostile_percent > 0.0 {
        println!(
            "hostile {}% {}: honest covered {} of {} ({:.2}%), forged deliveries {}",
            c.hostile_percent,
            c.hostile,
            r.honest_covered,
            r.honest,
            percent(r.honest_covered, r.honest),
            r.forged_deliveries
        );
    }
    match r.time_to_full_ms {
        Some(t) => println!("time to full coverage {t:.1} ms (simulated)"),
        None => println!("time to full coverage: never"),
    }
    if r.per_broadcast.len() > 1 {
        println!(
            "{:>9} {:>7} {:>6} {:>6} {:>14} {:>7} {:>12}",
            "broadcast", "covered", "live", "stable", "stable covered", "sends", "full (ms)"
        );
        for (i, b) in r.per_broadcast.iter().enumerate() {
            let full = b
                .time_to_full_ms
                .map_or_else(|| "never".to_string(), |t| format!("{t:.1}"));
            println!(
                "{:>9} {:>7} {:>6} {:>6} {:>14} {:>7} {:>12}",
                i + 1,
                b.covered,
                b.live,
                b.stable,
                b.stable_covered,
                b.sends,
                full
            );
        }
    }
    if let Some(rows) = &r.per_node {
        println!("{:>8} {:>6} {:>6}", "position", "reads", "writes");
        for n in rows {
            println!("{:>8} {:>6} {:>6}", n.position, n.reads, n.writes);
        }
    }
}
