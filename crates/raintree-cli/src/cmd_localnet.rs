//! `raintree localnet`: many real `raintree node` processes on 127.0.0.1 broadcasting to each
//! other, with a coverage / latency / cost report.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use raintree::transport::Identity;
use raintree_proto::broadcast::Redundancy;
use raintree_proto::wire::Strategy;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::admin::DeliveryRecord;
use crate::cmd_node::READY_PREFIX;
use crate::cmd_sim::OnOff;
use crate::node_config::{FileConfig, PeerConfig};

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
    /// Percent of nodes killed (SIGKILL) before broadcasting; never all of them.
    #[arg(long, default_value_t = 0.0)]
    pub kill: f64,
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
}

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

/// A node that did not behave.
#[derive(Debug, Serialize)]
pub struct FailedNode {
    /// Sorted position in the peer list.
    pub position: usize,
    /// Its address.
    pub address: String,
    /// What went wrong.
    pub reason: String,
}

/// The LocalNet report (`--json` prints it as is).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Nodes started.
    pub nodes: usize,
    /// Nodes alive during the broadcasts.
    pub live: usize,
    /// Nodes killed on purpose.
    pub killed: usize,
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
    /// Messages that reached every live node.
    pub complete_messages: usize,
    /// Time to full coverage, over the complete messages.
    pub latency_ms: Latency,
    /// Payload copies received per delivery (1.0 = no duplicate).
    pub copies_per_delivery: f64,
    /// Transport bytes sent by all nodes, per broadcast.
    pub bytes_per_broadcast: f64,
    /// Replacement sends after ACK timeouts.
    pub resends: u64,
    /// ACK timeouts.
    pub ack_timeouts: u64,
    /// Redundancy pushes.
    pub redundancy_sends: u64,
    /// IGYW offers.
    pub igyw_sends: u64,
    /// Nodes that failed to start, answer or stop cleanly.
    pub failed_nodes: Vec<FailedNode>,
    /// Wall-clock seconds of the whole run.
    pub duration_s: f64,
}

struct Member {
    address: String,
    admin: Option<SocketAddr>,
    child: Option<Child>,
    killed: bool,
}

/// Owns the node processes: dropping it kills any still running, so nothing is left behind.
struct Fleet {
    members: Vec<Member>,
    dir: PathBuf,
}

impl Fleet {
    /// Kills every node still running and waits until each has exited.
    async fn kill_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill().await;
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut() {
                let _ = c.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    let mut fleet = Fleet {
        members: Vec::new(),
        dir: dir.clone(),
    };
    let outcome = tokio::select! {
        r = drive(&args, &mut fleet, started) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted: every node was stopped".to_string()),
    };
    fleet.kill_all().await;
    let report = outcome?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_report(&report);
    }
    Ok(())
}

async fn drive(args: &LocalnetArgs, fleet: &mut Fleet, started: Instant) -> Result<Report, String> {
    let n = args.nodes;
    let progress = ProgressBar::new((n + args.messages) as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:40}] {pos}/{len} {elapsed}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    progress.set_message("starting");

    // Keys sorted by address, so member i is sorted position i.
    let mut ids: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect();
    ids.sort_by_key(|i| i.address());
    let ports = reserve_ports(n)?;
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
        let child = spawn_node(&exe, &path, &fleet.dir.join(format!("node-{i}.log")))?;
        fleet.members.push(Member {
            address: id.address().to_hex(),
            admin: None,
            child: Some(child),
            killed: false,
        });
    }

    let mut failed = Vec::new();
    wait_ready(fleet, &progress, &mut failed).await;

    tracing::info!(nodes = n, ready = n - failed.len(), "nodes ready");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let ready: Vec<usize> = (0..n)
        .filter(|&i| fleet.members[i].admin.is_some())
        .collect();
    if ready.is_empty() {
        return Err("no node became ready; see the failed nodes' logs".into());
    }
    if args.warmup.on() {
        progress.set_message("warming up");
        warm_up(&client, fleet, &ready, args.wait_s).await?;
    }

    // Kill a seeded random set, leaving at least one live node.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let kill_count =
        ((n as f64 * args.kill / 100.0).floor() as usize).min(ready.len().saturating_sub(1));
    for &i in ready.choose_multiple(&mut rng, kill_count) {
        let m = &mut fleet.members[i];
        if let Some(c) = m.child.as_mut() {
            let _ = c.kill().await;
        }
        m.killed = true;
    }
    let live: Vec<usize> = ready
        .iter()
        .copied()
        .filter(|&i| !fleet.members[i].killed)
        .collect();
    // Counters from here on measure only the broadcasts below, not start-up or warm-up.
    let baseline = gather_metrics(&client, fleet, &live, &mut Vec::new()).await;

    progress.set_message("broadcasting");
    let mut expected: HashSet<(String, u64)> = HashSet::with_capacity(args.messages);
    let t0 = tokio::time::Instant::now();
    for k in 0..args.messages {
        if args.rate > 0.0 {
            tokio::time::sleep_until(t0 + Duration::from_secs_f64(k as f64 / args.rate)).await;
        }
        let origin = live[k % live.len()];
        let mut payload = vec![0u8; args.size];
        rng.fill(&mut payload[..]);
        let m = &fleet.members[origin];
        match broadcast_via(&client, m, payload).await {
            Ok(nonce) => {
                expected.insert((m.address.clone(), nonce));
            }
            Err(reason) => failed.push(FailedNode {
                position: origin,
                address: m.address.clone(),
                reason,
            }),
        }
        progress.inc(1);
    }

    progress.set_message("waiting");
    let per_message_receivers = live.len() - 1;
    let seen = wait_coverage(&client, fleet, &live, &expected, args.wait_s).await;

    progress.set_message("metrics");
    let mut totals = gather_metrics(&client, fleet, &live, &mut failed).await;
    for (k, v) in &baseline {
        if let Some(t) = totals.get_mut(k) {
            *t -= v;
        }
    }

    progress.set_message("stopping");
    for &i in &live {
        let admin = fleet.members[i].admin.expect("live");
        let _ = client.post(format!("http://{admin}/shutdown")).send().await;
    }
    for &i in &live {
        let m = &mut fleet.members[i];
        let Some(child) = m.child.as_mut() else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => failed.push(FailedNode {
                position: i,
                address: m.address.clone(),
                reason: format!("exited with {status}"),
            }),
            _ => {
                let _ = child.kill().await;
                failed.push(FailedNode {
                    position: i,
                    address: m.address.clone(),
                    reason: "did not stop within 15 s of /shutdown".into(),
                });
            }
        }
        m.child = None;
    }
    progress.finish_and_clear();

    let delivered: usize = seen.values().map(|v| v.len()).sum();
    let want = expected.len() * per_message_receivers;
    let mut full: Vec<f64> = seen
        .values()
        .filter(|v| v.len() >= per_message_receivers)
        .map(|v| v.iter().copied().max().unwrap_or(0) as f64 / 1000.0)
        .collect();
    full.sort_by(|a, b| a.total_cmp(b));
    let deliveries = totals
        .get("raintree_deliveries_total")
        .copied()
        .unwrap_or(0.0);
    let duplicates = totals
        .get("raintree_duplicates_total")
        .copied()
        .unwrap_or(0.0);
    let bytes_sent: f64 = totals
        .iter()
        .filter(|(k, _)| k.starts_with("raintree_transport") && k.contains("bytes_sent"))
        .map(|(_, v)| v)
        .sum();
    let get = |k: &str| totals.get(k).copied().unwrap_or(0.0) as u64;
    Ok(Report {
        nodes: n,
        live: live.len(),
        killed: kill_count,
        messages: expected.len(),
        size: args.size,
        strategy: args.strategy,
        redundancy: args.redundancy,
        acks: args.acks.on(),
        cleanup: args.cleanup.on(),
        coverage: if want == 0 {
            1.0
        } else {
            delivered as f64 / want as f64
        },
        complete_messages: full.len(),
        latency_ms: Latency {
            p50: percentile(&full, 0.50),
            p99: percentile(&full, 0.99),
            max: full.last().copied().unwrap_or(0.0),
        },
        copies_per_delivery: if deliveries > 0.0 {
            (deliveries + duplicates) / deliveries
        } else {
            0.0
        },
        bytes_per_broadcast: if expected.is_empty() {
            0.0
        } else {
            bytes_sent / expected.len() as f64
        },
        resends: get("raintree_resends_total"),
        ack_timeouts: get("raintree_ack_timeouts_total"),
        redundancy_sends: get("raintree_redundancy_sends_total"),
        igyw_sends: get("raintree_igyw_sends_total"),
        failed_nodes: failed,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// Sums every node's Prometheus counters by metric name.
async fn gather_metrics(
    client: &reqwest::Client,
    fleet: &Fleet,
    nodes: &[usize],
    failed: &mut Vec<FailedNode>,
) -> HashMap<String, f64> {
    let mut totals: HashMap<String, f64> = HashMap::new();
    for &i in nodes {
        let m = &fleet.members[i];
        let Some(admin) = m.admin else { continue };
        let text = match client.get(format!("http://{admin}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => {
                failed.push(FailedNode {
                    position: i,
                    address: m.address.clone(),
                    reason: format!("metrics unavailable: {e}"),
                });
                continue;
            }
        };
        for (k, v) in parse_metrics(&text) {
            *totals.entry(k).or_default() += v;
        }
    }
    totals
}

/// Broadcasts `payload` through a node's admin endpoint; returns the nonce.
async fn broadcast_via(
    client: &reqwest::Client,
    m: &Member,
    payload: Vec<u8>,
) -> Result<u64, String> {
    let admin = m.admin.ok_or("node is not ready")?;
    let r = client
        .post(format!("http://{admin}/broadcast"))
        .body(payload)
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

/// Polls the nodes' deliveries until every expected message reached every other node of
/// `nodes`, or `wait_s` seconds pass; returns the latencies seen per message.
async fn wait_coverage(
    client: &reqwest::Client,
    fleet: &Fleet,
    nodes: &[usize],
    expected: &HashSet<(String, u64)>,
    wait_s: u64,
) -> HashMap<(String, u64), Vec<u64>> {
    let want = expected.len() * nodes.len().saturating_sub(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s);
    loop {
        let seen = collect_deliveries(client, fleet, nodes, expected).await;
        let done = seen.values().map(|v| v.len()).sum::<usize>();
        if done >= want || tokio::time::Instant::now() >= deadline {
            return seen;
        }
        // Polling a few times a second is enough for a human-facing report.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One 1-byte broadcast from every node, so the pooled connections the measured broadcasts
/// use already exist, as in a long-running network; excluded from every figure.
async fn warm_up(
    client: &reqwest::Client,
    fleet: &Fleet,
    nodes: &[usize],
    wait_s: u64,
) -> Result<(), String> {
    let mut expected = HashSet::with_capacity(nodes.len());
    for &i in nodes {
        let m = &fleet.members[i];
        let nonce = broadcast_via(client, m, vec![0]).await?;
        expected.insert((m.address.clone(), nonce));
    }
    wait_coverage(client, fleet, nodes, &expected, wait_s).await;
    Ok(())
}

fn spawn_node(exe: &Path, config: &Path, log: &Path) -> Result<Child, String> {
    let log =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("node")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    // Node processes share two cores with hundreds of others: two runtime threads each is plenty.
    cmd.env("RAINTREE_WORKER_THREADS", "1");
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

async fn wait_ready(fleet: &mut Fleet, progress: &ProgressBar, failed: &mut Vec<FailedNode>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (i, m) in fleet.members.iter_mut().enumerate() {
        let Some(child) = m.child.as_mut() else {
            continue;
        };
        let Some(stdout) = child.stdout.take() else {
            continue;
        };
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout_at(deadline, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix(READY_PREFIX) {
                    let v: serde_json::Value = serde_json::from_str(json).ok()?;
                    return v["admin"].as_str()?.parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await;
        match ready {
            Ok(Some(admin)) => m.admin = Some(admin),
            other => {
                let reason = if other.is_err() {
                    "not ready within 60 s"
                } else {
                    "exited before ready"
                };
                failed.push(FailedNode {
                    position: i,
                    address: m.address.clone(),
                    reason: reason.into(),
                });
                let _ = child.kill().await;
                m.child = None;
            }
        }
        progress.inc(1);
    }
}

async fn collect_deliveries(
    client: &reqwest::Client,
    fleet: &Fleet,
    live: &[usize],
    expected: &HashSet<(String, u64)>,
) -> HashMap<(String, u64), Vec<u64>> {
    let mut seen: HashMap<(String, u64), Vec<u64>> = HashMap::new();
    for &i in live {
        let m = &fleet.members[i];
        let Some(admin) = m.admin else { continue };
        let Ok(resp) = client
            .get(format!("http://{admin}/deliveries"))
            .send()
            .await
        else {
            continue;
        };
        let Ok(records) = resp.json::<Vec<DeliveryRecord>>().await else {
            continue;
        };
        for r in records {
            // The originator's own copy is not a delivery to a peer.
            if r.origin == m.address {
                continue;
            }
            let key = (r.origin, r.nonce);
            if expected.contains(&key) {
                seen.entry(key).or_default().push(r.latency_us.unwrap_or(0));
            }
        }
    }
    seen
}

/// Free listen ports below the kernel's ephemeral range (32768 and up on Linux), so that no
/// node's outbound sockets or port-0 admin listener can take a port another node was given.
fn reserve_ports(n: usize) -> Result<Vec<u16>, String> {
    const LOW: u16 = 10_000;
    const HIGH: u16 = 32_000;
    let span = HIGH - LOW;
    let start = rand::random::<u16>() % span;
    let ports: Vec<u16> = (0..span)
        .map(|i| LOW + (start + i) % span)
        .filter(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .take(n)
        .collect();
    if ports.len() < n {
        return Err(format!("only {} free ports in {LOW}..{HIGH}", ports.len()));
    }
    Ok(ports)
}

/// Sums Prometheus text samples by metric name, ignoring labels.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(name.to_string()).or_default() += v;
        }
    }
    out
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn print_report(r: &Report) {
    println!("raintree LocalNet: {} node processes on 127.0.0.1", r.nodes);
    println!(
        "  strategy {:?}, redundancy {}, acks {}, clean-up {}",
        r.strategy,
        r.redundancy,
        if r.acks { "on" } else { "off" },
        if r.cleanup { "on" } else { "off" }
    );
    println!(
        "  {} broadcasts of {} bytes; {} live nodes, {} killed",
        r.messages, r.size, r.live, r.killed
    );
    println!(
        "  coverage of live nodes   {:.4} ({} of {} messages reached every live node)",
        r.coverage, r.complete_messages, r.messages
    );
    println!(
        "  time to full coverage    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max
    );
    println!("  copies per delivery      {:.3}", r.copies_per_delivery);
    println!(
        "  bytes on the wire        {:.0} per broadcast",
        r.bytes_per_broadcast
    );
    println!(
        "  resends {}, ack timeouts {}, redundancy sends {}, igyw offers {}",
        r.resends, r.ack_timeouts, r.redundancy_sends, r.igyw_sends
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_across_labels() {
        let text = "# HELP x\nraintree_a_total{kind=\"g\"} 2\nraintree_a_total{kind=\"h\"} 3\nraintree_b 1.5\n# EOF\n";
        let m = parse_metrics(text);
        assert_eq!(m["raintree_a_total"], 5.0);
        assert_eq!(m["raintree_b"], 1.5);
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
