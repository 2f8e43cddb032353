//! One hostile peer floods one node while honest peers broadcast through it.
//!
//! `cargo run --release -p raintree --example hostile_bench -- [--json] [--messages N]
//! [--honest K] [--broadcasts B] [--no-ban]`
//!
//! The target node runs in a child process (this binary re-run with `--target`), so its peak
//! RSS (VmHWM) is its own. K honest nodes and the attacker run in this process on loopback.
//! Every node lists the same K + 2 peers (the attacker is a listed identity whose listen
//! address refuses connections). The attacker dials the target as itself and writes N
//! messages as fast as TCP takes them, redialling whenever it is cut off:
//! - fresh ids: validly signed broadcasts of its own, 64-byte payloads, range 1;
//! - forged origins: copies in an honest node's name with the attacker's key;
//! - range inflation: one of its earlier ids again with range 2^31;
//! - an oversized frame (5 MiB, over the 4 MiB limit) every 50,000 messages.
//!
//! Meanwhile the honest nodes broadcast B 1 KiB messages, one every 10 ms, round robin. The
//! same run without the attacker gives `clean_p50_ms`. With bans on (the default config) the
//! attacker is cut off after a few offences; `--no-ban` keeps it connected for the whole
//! flood, the memory bound's worst case.
//!
//! `rss_bound_bytes` is derived from the target's config (`NodeConfig::memory_bound`).

use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use raintree::node::{unix_micros, Node, NodeConfig, PeerEntry};
use raintree::proto::wire::{
    payload_hash, signed_bytes, Gossip, Message, MessageId, OriginSignature, Route, Strategy,
};
use raintree::proto::Address;
use raintree::transport::framing::Sealer;
use raintree::transport::handshake::{self, LocalKeys};
use raintree::transport::Identity;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const OVERSIZE_EVERY: u64 = 50_000;
const FRESH_PAYLOAD: usize = 64;
const HONEST_PAYLOAD: usize = 1024;

struct Opts {
    json: bool,
    messages: u64,
    honest: usize,
    broadcasts: usize,
    ban: bool,
}

fn opts(args: &[String]) -> Opts {
    let val = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    Opts {
        json: args.iter().any(|a| a == "--json"),
        messages: val("--messages", 1_000_000),
        honest: val("--honest", 8) as usize,
        broadcasts: val("--broadcasts", 200) as usize,
        ban: !args.iter().any(|a| a == "--no-ban"),
    }
}

/// The target's configuration, shared by the child (to run it) and the parent (for the bound).
fn target_config(identity: Identity, peers: Vec<PeerEntry>, ban: bool) -> NodeConfig {
    let mut cfg = NodeConfig::new(identity, "127.0.0.1:0".parse().unwrap(), peers);
    if !ban {
        cfg.transport.score.ban_threshold = 0.0;
    }
    cfg
}

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn entries_arg(entries: &[PeerEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}@{}", e.address.to_hex(), e.addr))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_entries(s: &str) -> Vec<PeerEntry> {
    s.split(',')
        .map(|e| {
            let (a, addr) = e.split_once('@').expect("address@ip:port");
            PeerEntry {
                address: a.parse().expect("address"),
                addr: addr.parse().expect("socket address"),
            }
        })
        .collect()
}

/// The child: runs the target node until stdin closes, then reports on stdout.
async fn target(args: &[String]) {
    let at = |name: &str| {
        let i = args.iter().position(|a| a == name).expect(name);
        args[i + 1].clone()
    };
    let mut secret = [0u8; 32];
    hex::decode_to_slice(at("--key"), &mut secret).expect("key");
    let attacker: Address = at("--attacker").parse().expect("attacker");
    let cfg = target_config(
        Identity::from_secret_bytes(&secret),
        parse_entries(&at("--peers")),
        !args.iter().any(|a| a == "--no-ban"),
    );
    let (node, mut streams) = Node::start(cfg).await.expect("target starts");
    println!("READY {}", node.local_addr());
    let honest = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&honest);
    tokio::spawn(async move {
        while let Some(d) = streams.deliveries.recv().await {
            if d.id.origin != attacker {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // Stdin closing is the parent's "stop".
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .ok();
    let text = node.metrics_text();
    let metric = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let stats = node.stats();
    let report = json!({
        "honest_deliveries": honest.load(Ordering::Relaxed),
        "peak_rss_bytes": peak_rss(),
        "bans": metric("raintree_transport_bans_total"),
        "penalties": metric("raintree_transport_penalties_total"),
        "refused": metric("raintree_transport_refused_connections_total"),
        "frame_errors": metric("raintree_transport_frame_errors_total"),
        "forged": stats.forged,
        "seen_full": stats.seen_full,
        "deliveries": stats.deliveries,
    });
    node.shutdown(Duration::from_secs(2)).await;
    println!("{report}");
}

/// Signed copies of the attacker's own broadcasts, made before the clock starts.
fn presign(attacker: &Identity, n: usize) -> Vec<Gossip> {
    let payload = Bytes::from(vec![0xa5u8; FRESH_PAYLOAD]);
    let hash = payload_hash(&payload);
    let public_key = attacker.public_key();
    let threads = 2;
    let chunks: Vec<Vec<Gossip>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let payload = payload.clone();
                s.spawn(move || {
                    (0..n)
                        .filter(|i| i % threads == t)
                        .map(|i| {
                            let id = MessageId {
                                origin: attacker.address(),
                                nonce: i as u64 + 1,
                            };
                            let time = 1;
                            let sig =
                                attacker.sign(&signed_bytes(&id, time, Strategy::Exact, &hash));
                            Gossip {
                                id,
                                level_or_range: 1,
                                strategy: Strategy::Exact,
                                route: Route::Tree,
                                origin_time_us: time,
                                hops: 1,
                                payload: payload.clone(),
                                signature: Some(Arc::new(OriginSignature {
                                    public_key,
                                    signature: sig,
                                })),
                            }
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    chunks.into_iter().flatten().collect()
}

#[derive(Default)]
struct AttackStats {
    sent: AtomicU64,
    connects: AtomicU64,
    failed_connects: AtomicU64,
}

/// Who attacks whom, with what.
struct Attack {
    me: Identity,
    /// The target's listen address and identity.
    to: SocketAddr,
    target: Address,
    /// The honest node whose name forged copies use.
    victim: Address,
    pool: Arc<Vec<Gossip>>,
    total: u64,
}

/// Writes `total` messages at the target as fast as it reads them, redialling when cut off.
async fn attack(a: Attack, stop: Arc<AtomicBool>, stats: Arc<AttackStats>) {
    let Attack {
        me,
        to,
        target,
        victim,
        pool,
        total,
    } = a;
    let keys = LocalKeys::generate(&me).unwrap();
    let mut i = 0u64;
    let mut fresh = 0usize;
    while i < total && !stop.load(Ordering::Relaxed) {
        let Ok(sock) = TcpStream::connect(to).await else {
            stats.failed_connects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (r, mut w) = sock.into_split();
        let mut reader = handshake::noise_reader(r);
        let est = match handshake::initiate(&keys, &mut reader, &mut w, target).await {
            Ok(est) => est,
            Err(_) => {
                stats.failed_connects.fetch_add(1, Ordering::Relaxed);
                // A banned or rate-limited attacker retries, but not in a hot loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        // Drain whatever the target sends (ACKs), so its writes never block on us.
        let drain = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(Ok(_)) = reader.next().await {}
        });
        let mut sealer = Sealer::new(est.cipher, 64 << 20);
        let mut out = BytesMut::new();
        'conn: while i < total && !stop.load(Ordering::Relaxed) {
            let mut batch = 0;
            while batch < 256 * 1024 && i < total {
                let msg = if i > 0 && i % OVERSIZE_EVERY == 0 {
                    Message::Direct {
                        id: MessageId {
                            origin: me.address(),
                            nonce: i,
                        },
                        payload: Bytes::from(vec![0u8; 5 << 20]),
                    }
                } else {
                    match i % 3 {
                        0 => {
                            let g = pool[fresh % pool.len()].clone();
                            fresh += 1;
                            Message::Gossip(g)
                        }
                        1 => {
                            let mut g = pool[(i as usize / 3) % pool.len()].clone();
                            g.id.origin = victim;
                            g.id.nonce = i;
                            Message::Gossip(g)
                        }
                        _ => {
                            let mut g = pool[fresh.saturating_sub(1) % pool.len()].clone();
                            g.level_or_range = 1 << 31;
                            Message::Gossip(g)
                        }
                    }
                };
                let oversized = matches!(msg, Message::Direct { .. });
                batch += sealer.push(msg).unwrap_or(0);
                i += 1;
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if oversized {
                    break;
                }
            }
            out.clear();
            if sealer.seal_into(&mut out).is_err() || w.write_all(&out).await.is_err() {
                break 'conn;
            }
        }
        let _ = w.shutdown().await;
        drain.abort();
    }
}

struct RunResult {
    coverage: f64,
    p50_ms: f64,
    target: Value,
    attack: Option<(u64, u64, u64)>,
    secs: f64,
}

async fn run(o: &Opts, hostile: bool) -> RunResult {
    let ids: Vec<Identity> = (0..o.honest).map(|_| Identity::generate()).collect();
    let target_id = Identity::generate();
    let attacker = Identity::generate();
    // The attacker is listed, but its listen address refuses connections.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);

    let mut nodes = Vec::new();
    for id in &ids {
        let cfg = NodeConfig::new(id.clone(), "127.0.0.1:0".parse().unwrap(), Vec::new());
        nodes.push(Node::start(cfg).await.expect("honest node starts"));
    }
    let mut entries: Vec<PeerEntry> = nodes
        .iter()
        .map(|(n, _)| PeerEntry {
            address: n.address(),
            addr: n.local_addr(),
        })
        .collect();
    entries.push(PeerEntry {
        address: attacker.address(),
        addr: dead_addr,
    });

    let exe = std::env::current_exe().expect("own path");
    let mut cmd = Command::new(exe);
    cmd.arg("--target")
        .arg("--key")
        .arg(hex::encode(target_id.secret_bytes()))
        .arg("--attacker")
        .arg(attacker.address().to_hex())
        .arg("--peers")
        .arg(entries_arg(&entries))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if !o.ban {
        cmd.arg("--no-ban");
    }
    let mut child = cmd.spawn().expect("target process");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().expect("target output").expect("line");
    let target_addr: SocketAddr = ready
        .strip_prefix("READY ")
        .expect("READY line")
        .parse()
        .unwrap();
    entries.push(PeerEntry {
        address: target_id.address(),
        addr: target_addr,
    });
    for (n, _) in &nodes {
        n.add_peers(&entries).await.unwrap();
    }

    // Deliveries of honest broadcasts at honest nodes, with their latency.
    let honest: HashSet<Address> = ids.iter().map(|i| i.address()).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut nodes_only = Vec::new();
    for (n, mut streams) in nodes {
        let tx = tx.clone();
        let honest = honest.clone();
        tokio::spawn(async move {
            while let Some(d) = streams.deliveries.recv().await {
                if honest.contains(&d.id.origin) {
                    let lat = unix_micros().saturating_sub(d.origin_time_us);
                    let _ = tx.send((d.id, lat));
                }
            }
        });
        nodes_only.push(n);
    }
    drop(tx);

    // Warm-up: one broadcast per node opens the connections; not counted.
    let mut warm = HashSet::new();
    for n in &nodes_only {
        warm.insert(n.broadcast(Bytes::from_static(b"warm")).await.unwrap());
    }
    let want_warm = warm.len() * (o.honest - 1);
    let mut got = 0;
    while got < want_warm {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some((id, _))) if warm.contains(&id) => got += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(AttackStats::default());
    let attacker_task = hostile.then(|| {
        let pool = Arc::new(presign(
            &attacker,
            (o.messages as usize / 3).clamp(1, 400_000),
        ));
        let a = Attack {
            me: attacker.clone(),
            to: target_addr,
            target: target_id.address(),
            victim: ids[0].address(),
            pool,
            total: o.messages,
        };
        tokio::spawn(attack(a, Arc::clone(&stop), Arc::clone(&stats)))
    });

    let start = Instant::now();
    let mut sent = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for b in 0..o.broadcasts {
        tick.tick().await;
        let n = &nodes_only[b % nodes_only.len()];
        let payload = Bytes::from(vec![b as u8; HONEST_PAYLOAD]);
        sent.insert(n.broadcast(payload).await.unwrap());
    }
    let want = sent.len() * (o.honest - 1);
    let mut lat = Vec::with_capacity(want);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while lat.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((id, l))) if sent.contains(&id) => lat.push(l),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    // The attacker gets the rest of its flood out (or is locked out) before the report.
    if let Some(t) = attacker_task {
        let _ = tokio::time::timeout(Duration::from_secs(600), async {
            while !t.is_finished() {
                if stats.connects.load(Ordering::Relaxed) > 0
                    && stats.failed_connects.load(Ordering::Relaxed) > 200
                {
                    // Locked out for good (banned): nothing more it can do.
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        t.abort();
    }
    let secs = start.elapsed().as_secs_f64();
    // Stop the target and read its report.
    drop(child.stdin.take());
    let report = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| serde_json::from_str::<Value>(&l).ok())
        .unwrap_or(Value::Null);
    let _ = child.wait();
    for n in &nodes_only {
        n.shutdown(Duration::from_secs(2)).await;
    }
    let target_honest = report["honest_deliveries"].as_u64().unwrap_or(0);
    // The target also received the warm-up broadcasts.
    let target_counted = target_honest.saturating_sub(warm.len() as u64);
    let expected = (sent.len() * o.honest) as f64;
    let coverage = (lat.len() as u64 + target_counted.min(sent.len() as u64)) as f64 / expected;
    lat.sort_unstable();
    let p50_ms = lat
        .get(lat.len() / 2)
        .map_or(f64::NAN, |&us| us as f64 / 1000.0);
    RunResult {
        coverage,
        p50_ms,
        target: report,
        attack: hostile.then(|| {
            (
                stats.sent.load(Ordering::Relaxed),
                stats.connects.load(Ordering::Relaxed),
                stats.failed_connects.load(Ordering::Relaxed),
            )
        }),
        secs,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if args.iter().any(|a| a == "--target") {
        rt.block_on(target(&args));
        return;
    }
    let o = opts(&args);
    let clean = rt.block_on(run(&o, false));
    let hostile = rt.block_on(run(&o, true));
    let cfg = target_config(Identity::generate(), Vec::new(), o.ban);
    // Connections at the target: the pool keeps one per peer (every honest one and the
    // attacker), plus one being replaced or refused at any time.
    // One connection per peer (honest ones and the attacker), and one more while a
    // simultaneous dial is resolved.
    let bound = cfg.memory_bound(o.honest + 2).total();
    let (sent, connects, failed) = hostile.attack.unwrap_or_default();
    let out = json!({
        "peak_rss_bytes": hostile.target["peak_rss_bytes"],
        "rss_bound_bytes": bound,
        "honest_coverage": hostile.coverage,
        "honest_p50_ms": hostile.p50_ms,
        "clean_p50_ms": clean.p50_ms,
        "clean_coverage": clean.coverage,
        "clean_peak_rss_bytes": clean.target["peak_rss_bytes"],
        "bans": o.ban,
        "attacker_messages_written": sent,
        "attacker_connections": connects,
        "attacker_refused_connections": failed,
        "target": hostile.target,
        "honest_nodes": o.honest,
        "broadcasts": o.broadcasts,
        "hostile_run_s": hostile.secs,
    });
    if o.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
    }
    let _ = std::io::stdout().flush();
}
