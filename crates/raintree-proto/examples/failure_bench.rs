//! The failure-path targets, measured in the simulator and printed beside the run without
//! failures (2,000 nodes, 10 ± 5 ms links, exact, ACKs on, clean-up off, 10 broadcasts):
//!
//! ```sh
//! cargo run --release -p raintree-proto --example failure_bench
//! ```
//!
//! Each row says whether its target holds; the process exits non-zero if one does not.

use std::time::Duration;

use raintree_proto::broadcast::Config;
use raintree_proto::sim::{self, Failure, Report, SimConfig};
use raintree_proto::wire::Strategy;

fn run(dead: f64, failure: Failure, seed: u64) -> Report {
    sim::run(&SimConfig {
        nodes: 2000,
        protocol: Config {
            strategy: Strategy::Exact,
            ..Config::default()
        },
        dead_percent: dead,
        failure,
        broadcasts: 10,
        seed,
        ..SimConfig::default()
    })
    .expect("valid simulation")
}

fn times(r: &Report) -> Vec<f64> {
    r.per_broadcast
        .iter()
        .map(|b| b.time_to_full_ms.unwrap_or(f64::INFINITY))
        .collect()
}

fn main() {
    let initial = Config::default().ack_timeout.as_secs_f64() * 1e3;
    let mut ok = true;
    println!(
        "{:>8} {:>5} {:>4} {:>9} {:>10} {:>12} {:>14} {:>8} {:>6}",
        "failure",
        "dead",
        "seed",
        "coverage",
        "first ms",
        "later max ms",
        "no-failure ms",
        "timeouts",
        "target"
    );
    for seed in [7, 8] {
        let clean = run(0.0, Failure::Silent, seed);
        let base = times(&clean);
        let base_max = base.iter().cloned().fold(0.0, f64::max);
        for failure in [Failure::Silent, Failure::Refused] {
            for dead in [10.0, 20.0, 30.0] {
                let r = run(dead, failure, seed);
                let t = times(&r);
                let full = r.per_broadcast.iter().all(|b| b.stable_covered == b.stable);
                let later = t[1..].iter().cloned().fold(0.0, f64::max);
                let first_ok = match failure {
                    Failure::Silent => t[0] <= base[0] + 6.0 * initial,
                    Failure::Refused => t[0] <= 2.0 * base[0],
                };
                let later_ok = t[1..].iter().zip(&base[1..]).all(|(a, b)| *a <= 2.0 * b);
                let met = full && first_ok && later_ok;
                ok &= met;
                let covered: usize = r.per_broadcast.iter().map(|b| b.stable_covered).sum();
                let stable: usize = r.per_broadcast.iter().map(|b| b.stable).sum();
                println!(
                    "{:>8} {:>4}% {:>4} {:>9.4} {:>10.1} {:>12.1} {:>14.1} {:>8} {:>6}",
                    format!("{failure:?}").to_lowercase(),
                    dead,
                    seed,
                    covered as f64 / stable as f64,
                    t[0],
                    later,
                    base_max,
                    r.engine.ack_timeouts,
                    if met { "met" } else { "MISSED" }
                );
            }
        }
    }
    // Churn: 10% of nodes down in every 1 s period, 100 broadcasts 100 ms apart.
    for failure in [Failure::Silent, Failure::Refused] {
        let r = sim::run(&SimConfig {
            nodes: 2000,
            protocol: Config {
                strategy: Strategy::Exact,
                ..Config::default()
            },
            churn_percent: 10.0,
            churn_period: Duration::from_secs(1),
            interval: Duration::from_millis(100),
            broadcasts: 100,
            failure,
            seed: 7,
            ..SimConfig::default()
        })
        .expect("valid simulation");
        let full = r
            .per_broadcast
            .iter()
            .filter(|b| b.stable_covered == b.stable)
            .count();
        let worst = r
            .per_broadcast
            .iter()
            .filter_map(|b| b.time_to_full_ms)
            .fold(0.0, f64::max);
        let met = full == r.per_broadcast.len();
        ok &= met;
        println!(
            "churn 10%/1 s, {:?}: {} of {} broadcasts reached every stable node, worst {:.1} ms: {}",
            failure,
            full,
            r.per_broadcast.len(),
            worst,
            if met { "met" } else { "MISSED" }
        );
    }
    if !ok {
        std::process::exit(1);
    }
}
