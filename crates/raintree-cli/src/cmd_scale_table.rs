//! `raintree scale-table`: how both trees scale from 27 to 177,147 nodes.
//!
//! Every run: one broadcast from position 0, ACKs on, clean-up off, redundancy off, 10 ms
//! latency plus up to 5 ms jitter, seed 1; once with no failures and once with 10% dead nodes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use raintree_proto::broadcast::Config;
use raintree_proto::sim::{self, SimConfig};
use raintree_proto::wire::Strategy;

/// Options of `raintree scale-table`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print a JSON array instead of a Markdown table.
    #[arg(long)]
    json: bool,
    /// Largest exponent: N runs over 3^3 ..= 3^max_power.
    #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u32).range(3..=12))]
    max_power: u32,
}

/// One line of the table.
#[derive(serde::Serialize, Debug)]
struct Row {
    nodes: usize,
    strategy: Strategy,
    dead_percent: f64,
    live: usize,
    covered: usize,
    sends: u64,
    acks: u64,
    resends: u64,
    max_hops: u32,
    time_to_full_ms: Option<f64>,
}

/// Runs every configuration (on two threads) and prints the table.
pub fn run(a: &Args) -> Result<(), String> {
    let mut jobs = Vec::new();
    for power in 3..=a.max_power {
        for strategy in [Strategy::Reference, Strategy::Exact] {
            for dead in [0.0, 10.0] {
                jobs.push((3usize.pow(power), strategy, dead));
            }
        }
    }
    let results: Mutex<Vec<Option<Result<Row, String>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(nodes, strategy, dead)) = jobs.get(i) else {
                    break;
                };
                let row = one(nodes, strategy, dead);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(row);
                }
            });
        }
    });
    let rows = results
        .into_inner()
        .map_err(|_| "a worker panicked".to_string())?
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("a run did not finish".into())))
        .collect::<Result<Vec<Row>, String>>()?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&rows).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("One broadcast from sorted position 0; ACKs on, clean-up off, redundancy off;");
    println!("10 ms latency + up to 5 ms jitter; seed 1. Sends = payload-bearing messages");
    println!("(tree sends + resends); hops = most hops of any delivery.");
    println!();
    println!(
        "| N | strategy | dead | sends | ACKs | resends | max hops | covered / live | coverage |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {}% | {} | {} | {} | {} | {} / {} | {:.2}% |",
            r.nodes,
            r.strategy,
            r.dead_percent,
            r.sends,
            r.acks,
            r.resends,
            r.max_hops,
            r.covered,
            r.live,
            100.0 * r.covered as f64 / r.live as f64
        );
    }
    Ok(())
}

fn one(nodes: usize, strategy: Strategy, dead_percent: f64) -> Result<Row, String> {
    let cfg = SimConfig {
        nodes,
        dead_percent,
        protocol: Config {
            strategy,
            acks: true,
            ..Config::default()
        },
        ..SimConfig::default()
    };
    let r = sim::run(&cfg).map_err(|e| e.to_string())?;
    Ok(Row {
        nodes,
        strategy,
        dead_percent,
        live: r.live,
        covered: r.covered,
        sends: r.sends,
        acks: r.engine.acks_sent,
        resends: r.engine.resends,
        max_hops: r.max_hops,
        time_to_full_ms: r.time_to_full_ms,
    })
}
