//! Simulator scale benchmark: one broadcast over up to 177,147 nodes, wall time and peak memory,
//! beside a baseline in the same run — a bare walk of the same tree that only counts sends, no
//! engine, no events, no timers — so the cost of the full state machine is visible.
//!
//! `cargo run --release -p raintree-proto --example sim_bench [-- --json]`
//!
//! Each case runs in a child process of this binary so its peak resident memory is its own.

use std::process::Command;
use std::time::Instant;

use raintree_proto::broadcast::Config;
use raintree_proto::sim::{self, SimConfig};
use raintree_proto::tree;
use raintree_proto::wire::Strategy;

const SIZES: [usize; 3] = [19_683, 59_049, 177_147];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--case") {
        case(&args[2], args[3].parse().expect("node count"));
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let exe = std::env::current_exe().expect("own path");
    let mut rows = Vec::new();
    for n in SIZES {
        for kind in ["walk", "reference", "exact"] {
            let out = Command::new(&exe)
                .args(["--case", kind, &n.to_string()])
                .output()
                .expect("child runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("case JSON");
            rows.push(v);
        }
    }
    if json {
        println!("{}", serde_json::json!({ "cases": rows }));
        return;
    }
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "nodes", "case", "seconds", "peak MiB", "sends", "us/node", "x baseline"
    );
    for chunk in rows.chunks(3) {
        let base = chunk[0]["seconds"].as_f64().unwrap_or(0.0).max(1e-9);
        for r in chunk {
            let nodes = r["nodes"].as_u64().unwrap_or(1);
            let secs = r["seconds"].as_f64().unwrap_or(0.0);
            println!(
                "{:>8} {:>10} {:>10.3} {:>10.1} {:>10} {:>10.2} {:>12.0}",
                nodes,
                r["case"].as_str().unwrap_or(""),
                secs,
                r["peak_mib"].as_f64().unwrap_or(0.0),
                r["sends"].as_u64().unwrap_or(0),
                secs * 1e6 / nodes as f64,
                secs / base
            );
        }
    }
    println!("targets: 177,147 nodes under 10 s and 2 GiB (the engine cases)");
}

fn case(kind: &str, n: usize) {
    let start = Instant::now();
    let sends = match kind {
        "walk" => walk_exact(n as u64),
        strategy => {
            let cfg = SimConfig {
                nodes: n,
                protocol: Config {
                    strategy: if strategy == "exact" {
                        Strategy::Exact
                    } else {
                        Strategy::Reference
                    },
                    ..Config::default()
                },
                ..SimConfig::default()
            };
            sim::run(&cfg).expect("simulation runs").sends
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "nodes": n, "case": kind, "seconds": seconds, "sends": sends, "peak_mib": peak_mib(),
        })
    );
}

/// Sends of the exact tree counted by walking it: the least work any simulator must do.
fn walk_exact(n: u64) -> u64 {
    let mut stack = vec![n];
    let mut sends = 0u64;
    while let Some(mut r) = stack.pop() {
        while r > 1 {
            for (_, len) in tree::exact_delegations(r) {
                sends += 1;
                stack.push(len);
            }
            r = tree::exact_parts(r)[0];
        }
    }
    sends
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
