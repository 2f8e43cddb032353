//! `raintree localnet`: many real `raintree node` processes on 127.0.0.1 broadcasting to each
//! other, with a coverage / latency / cost report.
//!
//! `fleet` owns the processes, `collect` talks to their admin endpoints, `procfs` reads CPU and
//! loopback counters, `report` computes the figures, `prometheus` runs and checks a real
//! Prometheus, `html` draws the page of charts (`tree_plan` gives it the planned tree).

mod collect;
mod fleet;
mod html;
mod procfs;
mod prometheus;
mod report;
mod tree_plan;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use raintree::node::unix_micros;
use raintree::transport::Identity;
use raintree_proto::broadcast::Redundancy;
use raintree_proto::wire::Strategy;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::cmd_sim::OnOff;
use crate::node_config::{FileConfig, PeerConfig};
use collect::{Admin, Deliveries, MsgKey, NodeStats};
use fleet::{FailedNode, Fleet};
use prometheus::{PromCheck, Prometheus};
use report::{Report, RssSample, RunData, Sent, Settings};

/// `raintree localnet` options.
#[derive(clap::Args, Debug, Clone)]
pub struct LocalnetArgs {
    /// Node processes to start.
    #[arg(long, default_value_t = 27)]
    pub nodes: usize,
    /// Broadcasts to send, from rotating originators.
    #[arg(long, default_value_t = 100)]
    pub messages: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Broadcasts per second (0: each as soon as the previous one is accepted).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Percent of nodes killed (SIGKILL); never all of them. Before broadcasting, unless
    /// `--kill-after-ms` is given.
    #[arg(long, default_value_t = 0.0)]
    pub kill: f64,
    /// Kill the `--kill` nodes this many milliseconds after the first broadcast, while
    /// broadcasts are in flight.
    #[arg(long)]
    pub kill_after_ms: Option<u64>,
    /// Tree strategy: reference or exact.
    #[arg(long, default_value = "exact")]
    pub strategy: Strategy,
    /// Redundancy layer: off, left, right or both.
    #[arg(long, default_value = "off")]
    pub redundancy: Redundancy,
    /// ACKs and resends: on or off.
    #[arg(long, value_enum, default_value = "on")]
    pub acks: OnOff,
    /// IGYW clean-up: on or off.
    #[arg(long, value_enum, default_value = "off")]
    pub cleanup: OnOff,
    /// ACK deadline in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub ack_timeout_ms: u64,
    /// First broadcast one byte from every node so connections are pooled (not measured).
    #[arg(long, value_enum, default_value = "on")]
    pub warmup: OnOff,
    /// Seconds to wait for full coverage after the last broadcast.
    #[arg(long, default_value_t = 30)]
    pub wait_s: u64,
    /// Seed for keys-independent choices (which nodes are killed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of the readable report.
    #[arg(long)]
    pub json: bool,
    /// Write an HTML page with charts (coverage, latency, per-node cost, one broadcast's tree)
    /// to DIR/index.html.
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// Run a Prometheus server (the `prometheus` binary) scraping every node, and fail unless
    /// its PromQL totals agree with the report.
    #[arg(long)]
    pub prometheus: bool,
    /// Sample every live node's resident memory every S seconds while broadcasting (a soak:
    /// memory must level off once `seen_ttl` has passed).
    #[arg(long, value_name = "S")]
    pub rss_every_s: Option<u64>,
}

/// Runs the LocalNet and prints its report; Ctrl-C kills every node before returning.
pub async fn run(args: LocalnetArgs) -> Result<(), String> {
    if args.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if !(0.0..100.0).contains(&args.kill) {
        return Err("--kill is a percentage in [0, 100)".into());
    }
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!(
        "raintree-localnet-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut fleet = Fleet::new(dir);
    let outcome = tokio::select! {
        r = drive(&args, &mut fleet) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted: every node was stopped".to_string()),
    };
    fleet.kill_all().await;
    let (run, prom) = outcome?;
    let settings = Settings {
        size: args.size,
        strategy: args.strategy,
        redundancy: args.redundancy,
        acks: args.acks.on(),
        cleanup: args.cleanup.on(),
        kill_after_ms: args.kill_after_ms,
    };
    let mut report = Report::new(&run, &settings, started.elapsed().as_secs_f64());
    let prom_error = match prom {
        Some(Ok(p)) => {
            report.prometheus = Some(p);
            None
        }
        Some(Err(e)) => Some(e),
        None => None,
    };
    if let Some(dir) = &args.report {
        let page = html::PageSettings {
            strategy: args.strategy,
            ack_timeout_ms: args.ack_timeout_ms,
        };
        let path = html::write(dir, &run, &report, &page)?;
        eprintln!("raintree: report written to {}", path.display());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        report.print();
    }
    match prom_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the kill during the run left behind for the report.
struct Killed {
    at_us: u64,
    /// Per killed node: its counters and CPU time just before the kill.
    last: Vec<(usize, Option<NodeStats>, Option<f64>)>,
}

/// A run's data, and with `--prometheus` Prometheus's agreeing totals or the disagreement.
type Outcome = (RunData, Option<Result<PromCheck, String>>);

async fn drive(args: &LocalnetArgs, fleet: &mut Fleet) -> Result<Outcome, String> {
    let n = args.nodes;
    let progress = ProgressBar::new((n + args.messages) as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:40}] {pos}/{len} {elapsed}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    phase(&progress, "starting");
    start_nodes(args, fleet)?;

    let mut failed = Vec::new();
    fleet.wait_ready(&progress, &mut failed).await;
    tracing::info!(nodes = n, ready = n - failed.len(), "nodes ready");
    let admin = Admin::new()?;
    let ready: Vec<usize> = (0..n)
        .filter(|&i| fleet.members[i].admin.is_some())
        .collect();
    if ready.is_empty() {
        return Err("no node became ready; see the failed nodes' logs".into());
    }
    let mut deliveries = Deliveries::new(n);
    if args.warmup.on() {
        phase(&progress, "warming up");
        warm_up(&admin, fleet, &ready, &mut deliveries, args.wait_s).await?;
    }

    // A seeded random set is killed, leaving at least one live node.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let kill_count =
        ((n as f64 * args.kill / 100.0).floor() as usize).min(ready.len().saturating_sub(1));
    let mut doomed: Vec<usize> = ready
        .choose_multiple(&mut rng, kill_count)
        .copied()
        .collect();
    doomed.sort_unstable();
    let mut killed_before = Vec::new();
    if args.kill_after_ms.is_none() {
        for &i in &doomed {
            fleet.kill_now(i);
        }
        killed_before = std::mem::take(&mut doomed);
    }
    let running: Vec<usize> = ready
        .iter()
        .copied()
        .filter(|i| !killed_before.contains(i))
        .collect();
    // Originators are the nodes that survive, so every broadcast is accepted.
    let live: Vec<usize> = running
        .iter()
        .copied()
        .filter(|i| !doomed.contains(i))
        .collect();

    let prom = if args.prometheus {
        phase(&progress, "prometheus");
        let targets: Vec<_> = ready
            .iter()
            .filter_map(|&i| Some((i, fleet.members[i].admin?)))
            .collect();
        Some(Prometheus::start(&targets, &prometheus::dir_in(&fleet.dir)).await?)
    } else {
        None
    };
    let prom_since = unix_secs();

    // Counters from here on measure only the broadcasts below, not start-up or warm-up.
    phase(&progress, "baseline");
    let baseline = settle(&admin, fleet, &running, &mut Vec::new()).await;
    let prom_base = match &prom {
        Some(p) => {
            p.wait_scraped_after(&running, unix_secs()).await?;
            unix_secs()
        }
        None => 0.0,
    };
    let cpu_start: f64 = running.iter().filter_map(|&i| cpu_of(fleet, i)).sum();
    let lo_start = procfs::loopback_tx_bytes();

    phase(&progress, "broadcasting");
    let mut sent: HashMap<MsgKey, Sent> = HashMap::with_capacity(args.messages);
    let t0 = tokio::time::Instant::now();
    let killer = args.kill_after_ms.filter(|_| !doomed.is_empty()).map(|ms| {
        tokio::spawn(kill_later(
            admin.clone(),
            fleet_targets(fleet, &doomed),
            t0,
            ms,
        ))
    });
    let sampler = args.rss_every_s.filter(|&s| s > 0).map(|every| {
        let pids: Vec<u32> = live.iter().filter_map(|&i| fleet.members[i].pid).collect();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        (stop, tokio::spawn(sample_rss(pids, t0, every, stopped)))
    });
    for k in 0..args.messages {
        if args.rate > 0.0 {
            tokio::time::sleep_until(t0 + Duration::from_secs_f64(k as f64 / args.rate)).await;
        }
        let origin = live[k % live.len()];
        let m = &fleet.members[origin];
        let at_us = unix_micros();
        match admin.broadcast(m.admin.expect("live"), args.size).await {
            Ok(nonce) => {
                sent.insert((m.address.clone(), nonce), Sent { origin, at_us });
            }
            Err(reason) => failed.push(FailedNode {
                position: origin,
                address: m.address.clone(),
                reason,
            }),
        }
        progress.inc(1);
        // A node keeps only its last few thousand deliveries; a long run reads them before
        // they go.
        if (k + 1) % (crate::admin::DELIVERY_LOG * 2 / 5) == 0 {
            let watch: HashMap<MsgKey, usize> =
                sent.iter().map(|(k, s)| (k.clone(), s.origin)).collect();
            deliveries.poll(&admin, fleet, &live, &watch).await;
        }
    }
    let killed = match killer {
        Some(h) => Some(h.await.map_err(|e| format!("kill task: {e}"))?),
        None => None,
    };
    let rss = match sampler {
        Some((stop, h)) => {
            let _ = stop.send(());
            h.await.map_err(|e| format!("memory sampler: {e}"))?
        }
        None => Vec::new(),
    };

    phase(&progress, "waiting");
    // One long poll per node ends the measured phase: the delivery log is read only after it,
    // so the loopback figure holds the protocol's traffic and hardly any of the harness's.
    wait_delivered(&admin, fleet, &live, &baseline, &sent, args.wait_s).await;
    let lo_end = procfs::loopback_tx_bytes();
    let mut cpu_ms: f64 = live.iter().filter_map(|&i| cpu_of(fleet, i)).sum();
    cpu_ms -= cpu_start;
    let watch: HashMap<MsgKey, usize> = sent.iter().map(|(k, s)| (k.clone(), s.origin)).collect();
    deliveries.poll(&admin, fleet, &live, &watch).await;

    phase(&progress, "metrics");
    let end = settle(&admin, fleet, &live, &mut failed).await;
    let settled = unix_secs();
    let mut per_node: Vec<Option<NodeStats>> = vec![None; n];
    let mut live_totals = PromCheck::default();
    for &i in &live {
        if let (Some(e), Some(b)) = (&end[i], &baseline[i]) {
            let d = e.minus(b);
            live_totals.deliveries += d.engine.deliveries;
            live_totals.bytes_sent += d.transport.bytes_sent;
            live_totals.resends += d.engine.resends;
            per_node[i] = Some(d);
        }
    }
    let prom_check = match prom {
        Some(p) => {
            phase(&progress, "promql");
            let check = async {
                p.wait_scraped_after(&live, settled).await?;
                let t = p.totals(&live, prom_base, unix_secs(), prom_since).await?;
                prometheus::compare(&t, &live_totals).map(|()| t)
            }
            .await;
            p.stop().await;
            Some(check)
        }
        None => None,
    };
    if let Some(k) = &killed {
        for (i, stats, cpu) in &k.last {
            cpu_ms += cpu.unwrap_or(0.0);
            if let (Some(e), Some(b)) = (stats, &baseline[*i]) {
                per_node[*i] = Some(e.minus(b));
            }
        }
    }

    phase(&progress, "stopping");
    for &i in &live {
        admin.shutdown(fleet.members[i].admin.expect("live")).await;
    }
    fleet.wait_stopped(&live, &mut failed).await;
    progress.finish_and_clear();

    let run = RunData {
        nodes: n,
        live,
        killed_before,
        killed_during: doomed,
        sent,
        deliveries,
        per_node,
        cpu_ms,
        loopback_bytes: lo_start.zip(lo_end).map(|(a, b)| b.saturating_sub(a)),
        killed_at_us: killed.map(|k| k.at_us),
        failed,
        rss,
    };
    Ok((run, prom_check))
}

/// Shows the phase on the progress bar and in the log (`RUST_LOG=info`).
fn phase(progress: &ProgressBar, name: &'static str) {
    tracing::info!(phase = name);
    progress.set_message(name);
}

fn unix_secs() -> f64 {
    unix_micros() as f64 / 1e6
}

/// Writes every node's config (keys sorted by address, so member i is sorted position i) and
/// starts its process.
fn start_nodes(args: &LocalnetArgs, fleet: &mut Fleet) -> Result<(), String> {
    let mut ids: Vec<Identity> = (0..args.nodes).map(|_| Identity::generate()).collect();
    ids.sort_by_key(|i| i.address());
    let ports = fleet::reserve_ports(args.nodes)?;
    let peers: Vec<PeerConfig> = ids
        .iter()
        .zip(&ports)
        .map(|(id, port)| PeerConfig {
            address: id.address(),
            addr: SocketAddr::from(([127, 0, 0, 1], *port)),
        })
        .collect();
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    for (i, id) in ids.iter().enumerate() {
        let cfg = FileConfig {
            key: hex::encode(id.secret_bytes()),
            listen: peers[i].addr,
            strategy: args.strategy,
            redundancy: args.redundancy,
            acks: args.acks.on(),
            cleanup: args.cleanup.on(),
            ack_timeout_ms: args.ack_timeout_ms,
            cleanup_delay_ms: args.ack_timeout_ms,
            peers: peers.clone(),
            ..FileConfig::default()
        };
        let path = fleet.dir.join(format!("node-{i}.toml"));
        let text = toml::to_string(&cfg).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        fleet.spawn(&exe, &path, id.address().to_hex())?;
    }
    Ok(())
}

/// Samples the resident memory of `pids` every `every` seconds until told to stop.
async fn sample_rss(
    pids: Vec<u32>,
    t0: tokio::time::Instant,
    every: u64,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<RssSample> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval_at(t0, Duration::from_secs(every));
    loop {
        tokio::select! {
            _ = &mut stop => return out,
            at = tick.tick() => {
                let kib: Vec<u64> = pids.iter().filter_map(|&p| procfs::rss_kib(p)).collect();
                if kib.is_empty() {
                    continue;
                }
                let mib = |k: u64| k as f64 / 1024.0;
                out.push(RssSample {
                    t_s: at.duration_since(t0).as_secs_f64(),
                    mean_mib: mib(kib.iter().sum::<u64>()) / kib.len() as f64,
                    max_mib: kib.iter().copied().map(mib).fold(0.0, f64::max),
                });
            }
        }
    }
}

fn cpu_of(fleet: &Fleet, i: usize) -> Option<f64> {
    procfs::cpu_ms(fleet.members[i].pid?)
}

/// Position, admin address and pid of each of `nodes`.
fn fleet_targets(fleet: &Fleet, nodes: &[usize]) -> Vec<(usize, Option<SocketAddr>, Option<u32>)> {
    nodes
        .iter()
        .map(|&i| (i, fleet.members[i].admin, fleet.members[i].pid))
        .collect()
}

/// At `t0 + ms`, reads each target's counters and CPU time, then SIGKILLs them all at once.
async fn kill_later(
    admin: Admin,
    targets: Vec<(usize, Option<SocketAddr>, Option<u32>)>,
    t0: tokio::time::Instant,
    ms: u64,
) -> Killed {
    // The fault is injected at a chosen instant; this timer is the experiment, not a wait.
    tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
    let mut last = Vec::with_capacity(targets.len());
    for &(i, addr, _) in &targets {
        let stats = match addr {
            Some(a) => admin.stats(a).await.ok(),
            None => None,
        };
        last.push((i, stats, None));
    }
    for (entry, &(_, _, pid)) in last.iter_mut().zip(&targets) {
        if let Some(pid) = pid {
            entry.2 = procfs::cpu_ms(pid);
            // SAFETY: kill(2) on a pid of our own child, which is not reaped before the harness
            // waits for it, so the pid cannot have been reused.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    Killed {
        at_us: unix_micros(),
        last,
    }
}

/// Every node's `/stats`, by position; failures are recorded in `failed`.
async fn gather_stats(
    admin: &Admin,
    fleet: &Fleet,
    nodes: &[usize],
    failed: &mut Vec<FailedNode>,
) -> Vec<Option<NodeStats>> {
    let mut out = vec![None; fleet.members.len()];
    for &i in nodes {
        let m = &fleet.members[i];
        let Some(addr) = m.admin else { continue };
        match admin.stats(addr).await {
            Ok(s) => out[i] = Some(s),
            Err(reason) => failed.push(FailedNode {
                position: i,
                address: m.address.clone(),
                reason,
            }),
        }
    }
    out
}

/// Reads the counters until two reads in a row agree (late ACKs, clean-up offers and resends
/// have finished), or 10 s pass; returns the last read.
async fn settle(
    admin: &Admin,
    fleet: &Fleet,
    nodes: &[usize],
    failed: &mut Vec<FailedNode>,
) -> Vec<Option<NodeStats>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = gather_stats(admin, fleet, nodes, &mut Vec::new()).await;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now_failed = &mut Vec::new();
        let next = gather_stats(admin, fleet, nodes, now_failed).await;
        if next == last || tokio::time::Instant::now() >= deadline {
            failed.append(now_failed);
            return next;
        }
        last = next;
    }
}

/// Waits until every node of `nodes` has delivered every message of `sent` it did not
/// originate, or `wait_s` seconds pass; one request per node.
async fn wait_delivered(
    admin: &Admin,
    fleet: &Fleet,
    nodes: &[usize],
    baseline: &[Option<NodeStats>],
    sent: &HashMap<MsgKey, Sent>,
    wait_s: u64,
) {
    let mut waits = tokio::task::JoinSet::new();
    for &i in nodes {
        let (Some(addr), Some(base)) = (fleet.members[i].admin, &baseline[i]) else {
            continue;
        };
        let expected = sent.values().filter(|s| s.origin != i).count() as u64;
        let seq = base.last_seq + expected;
        let admin = admin.clone();
        waits.spawn(async move { admin.wait_seq(addr, seq, Duration::from_secs(wait_s)).await });
    }
    while waits.join_next().await.is_some() {}
}

/// Polls the nodes' deliveries until every watched message reached every other node of
/// `nodes`, or `wait_s` seconds pass.
async fn wait_coverage(
    admin: &Admin,
    fleet: &Fleet,
    nodes: &[usize],
    watch: &HashMap<MsgKey, usize>,
    deliveries: &mut Deliveries,
    wait_s: u64,
) {
    let set: HashSet<usize> = nodes.iter().copied().collect();
    let want: usize = watch
        .values()
        .map(|o| set.len() - usize::from(set.contains(o)))
        .sum();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s);
    loop {
        deliveries.poll(admin, fleet, nodes, watch).await;
        if deliveries.covered(watch, |i| set.contains(&i)) >= want
            || tokio::time::Instant::now() >= deadline
        {
            return;
        }
        // Each poll fetches only new entries; the cadence only sets how soon the end is seen.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One 1-byte broadcast from every node, so the pooled connections the measured broadcasts
/// use already exist, as in a long-running network; excluded from every figure.
async fn warm_up(
    admin: &Admin,
    fleet: &Fleet,
    nodes: &[usize],
    deliveries: &mut Deliveries,
    wait_s: u64,
) -> Result<(), String> {
    let mut watch = HashMap::with_capacity(nodes.len());
    for &i in nodes {
        let m = &fleet.members[i];
        let nonce = admin.broadcast(m.admin.expect("ready"), 1).await?;
        watch.insert((m.address.clone(), nonce), i);
    }
    wait_coverage(admin, fleet, nodes, &watch, deliveries, wait_s).await;
    deliveries.by_message.clear();
    Ok(())
}
