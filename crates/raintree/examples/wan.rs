//! Full raintree nodes under simulated WAN latency, loss, partitions and crashes (turmoil).
//!
//! ```sh
//! cargo run --release -p raintree --example wan -- --nodes 100 --latency-ms 50 \
//!     --jitter-ms 20 --loss-percent 1 --scenario steady --messages 50 --seed 1 --json
//! ```
//! Scenarios: steady, partition, crash, slow-app, peer-change. The same seed prints the same
//! figures.

use std::time::Duration;

use raintree::wan::{self, Report, Scenario, WanConfig};

fn usage() -> ! {
    eprintln!(
        "usage: wan [--nodes N] [--latency-ms MS] [--jitter-ms MS] [--loss-percent P] \
         [--scenario steady|partition|crash|slow-app|peer-change] [--messages M] \
         [--interval-ms MS] [--payload BYTES] [--seed S] [--acks on|off] [--cleanup on|off] \
         [--redundancy off|left|right|both] [--json]"
    );
    std::process::exit(2)
}

fn on_off(v: &str) -> bool {
    match v {
        "on" => true,
        "off" => false,
        _ => usage(),
    }
}

fn main() {
    let mut cfg = WanConfig::new(100, Scenario::Steady, 50, 1);
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--json" {
            json = true;
            continue;
        }
        let value = args.next().unwrap_or_else(|| usage());
        let num = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--nodes" => cfg.nodes = num(&value) as usize,
            "--latency-ms" => cfg.latency = Duration::from_millis(num(&value)),
            "--jitter-ms" => cfg.jitter = Duration::from_millis(num(&value)),
            "--loss-percent" => cfg.loss_percent = value.parse().unwrap_or_else(|_| usage()),
            "--scenario" => cfg.scenario = value.parse().unwrap_or_else(|_| usage()),
            "--messages" => cfg.messages = num(&value) as usize,
            "--interval-ms" => cfg.interval = Duration::from_millis(num(&value)),
            "--payload" => cfg.payload = num(&value) as usize,
            "--seed" => cfg.seed = num(&value),
            "--cleanup" => cfg.protocol.cleanup = on_off(&value),
            "--acks" => cfg.protocol.acks = on_off(&value),
            "--redundancy" => cfg.protocol.redundancy = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let report = match wan::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wan: {e}");
            std::process::exit(1);
        }
    };
    if json {
        println!("{}", to_json(&cfg, &report));
    } else {
        print_text(&cfg, &report);
    }
}

/// One JSON object: LocalNet's report keys (every engine counter among them) plus
/// `shutdown_lost_acked` and the settings.
pub fn to_json(cfg: &WanConfig, r: &Report) -> serde_json::Value {
    let mut v = serde_json::json!({
        "scenario": cfg.scenario.name(),
        "nodes": r.nodes,
        "messages": r.messages,
        "latency_link_ms": cfg.latency.as_millis() as u64,
        "jitter_ms": cfg.jitter.as_millis() as u64,
        "loss_percent": cfg.loss_percent,
        "seed": cfg.seed,
        "strategy": cfg.protocol.strategy.to_string(),
        "acks": cfg.protocol.acks,
        "cleanup": cfg.protocol.cleanup,
        "redundancy": cfg.protocol.redundancy.to_string(),
        "coverage": r.coverage,
        "min_message_coverage": r.min_message_coverage,
        "complete_messages": r.complete_messages,
        "latency_ms": { "p50": r.latency_ms.p50, "p99": r.latency_ms.p99, "max": r.latency_ms.max },
        "copies_per_delivery": r.copies_per_delivery,
        "shutdown_lost_acked": r.shutdown_lost_acked,
        "sim_ms": r.sim_ms,
    });
    let serde_json::Value::Object(engine) = serde_json::to_value(&r.engine).expect("counters")
    else {
        unreachable!("Stats serialises as an object")
    };
    for (k, x) in engine {
        assert!(
            v.get(&k).is_none(),
            "engine counter `{k}` would hide a report key"
        );
        v[k] = x;
    }
    v
}

fn print_text(cfg: &WanConfig, r: &Report) {
    println!(
        "raintree WAN ({}): {} full nodes, links {} ms + up to {} ms, {}% writes lost; seed {}",
        cfg.scenario.name(),
        r.nodes,
        cfg.latency.as_millis(),
        cfg.jitter.as_millis(),
        cfg.loss_percent,
        cfg.seed
    );
    println!(
        "  coverage {:.4} (worst message {:.4}, {} of {} complete)",
        r.coverage, r.min_message_coverage, r.complete_messages, r.messages
    );
    println!(
        "  time to full coverage p50 {} ms, p99 {} ms, max {} ms (simulated)",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max
    );
    println!(
        "  copies per delivery {:.3}; resends {}, ack timeouts {}, give-ups {}, unreachable {}, probes {}",
        r.copies_per_delivery,
        r.engine.resends,
        r.engine.ack_timeouts,
        r.engine.give_ups,
        r.engine.unreachable,
        r.engine.probes
    );
    println!(
        "  ACKed but lost at graceful shutdown {}",
        r.shutdown_lost_acked
    );
}
