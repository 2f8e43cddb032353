//! The simulated WAN's tables in docs/SIMULATOR.md are golden outputs: turmoil's network and
//! every node are seeded, so each row is replayed here from the settings its table and its
//! label give, and must match the document.
//!
//! A table is marked by a comment `<!-- wan_table.rs: FLAGS -->` above it. FLAGS are the
//! `examples/wan.rs` flags every row shares; a row's label is its scenario, then any flags of
//! its own in backticks (`| partition, `--cleanup on` | ...`).

use std::time::Duration;

use raintree::wan::{run, Report, Scenario, WanConfig};

mod child_process;

const SIMULATOR: &str = include_str!("../../../docs/SIMULATOR.md");
const MARK: &str = "<!-- wan_table.rs: ";

/// A documented table: its shared flags and its data rows.
struct Table {
    flags: String,
    rows: Vec<String>,
}

fn tables() -> Vec<Table> {
    let mut tables = Vec::new();
    let mut lines = SIMULATOR.lines();
    while let Some(line) = lines.next() {
        let Some(flags) = line.strip_prefix(MARK) else {
            continue;
        };
        let flags = flags.strip_suffix(" -->").expect("the mark ends with -->");
        let rows: Vec<String> = lines
            .by_ref()
            .skip_while(|l| !l.starts_with('|'))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(str::to_string)
            .collect();
        assert!(!rows.is_empty(), "a table follows `{line}`");
        tables.push(Table {
            flags: flags.to_string(),
            rows,
        });
    }
    tables
}

/// `examples/wan.rs`'s flags, applied to `cfg`.
fn apply(cfg: &mut WanConfig, flags: &str) {
    let words: Vec<&str> = flags.split_whitespace().collect();
    assert!(words.len() % 2 == 0, "flags come in pairs: {flags}");
    for pair in words.chunks(2) {
        let (flag, value) = (pair[0], pair[1]);
        let num = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{flag} {value}"))
        };
        let on = || match value {
            "on" => true,
            "off" => false,
            _ => panic!("{flag} {value}"),
        };
        match flag {
            "--nodes" => cfg.nodes = num() as usize,
            "--latency-ms" => cfg.latency = Duration::from_millis(num()),
            "--jitter-ms" => cfg.jitter = Duration::from_millis(num()),
            "--loss-percent" => cfg.loss_percent = value.parse().unwrap(),
            "--scenario" => cfg.scenario = value.parse().unwrap(),
            "--messages" => cfg.messages = num() as usize,
            "--seed" => cfg.seed = num(),
            "--acks" => cfg.protocol.acks = on(),
            "--cleanup" => cfg.protocol.cleanup = on(),
            "--redundancy" => cfg.protocol.redundancy = value.parse().unwrap(),
            _ => panic!("unknown flag {flag}"),
        }
    }
}

/// The flags a row stands for: the table's, its scenario, then its own.
fn row_flags(table: &Table, row: &str) -> (String, String) {
    let label = row.split('|').nth(1).expect("a label cell").trim();
    let mut parts = label.split(", ");
    let mut flags = format!("{} --scenario {}", table.flags, parts.next().unwrap());
    for own in parts {
        let own = own
            .strip_prefix('`')
            .and_then(|f| f.strip_suffix('`'))
            .unwrap_or_else(|| panic!("`{own}` in `{label}` is a flag in backticks"));
        flags = format!("{flags} {own}");
    }
    (label.to_string(), flags)
}

/// `1234567` as `1,234,567`, the docs' style for counts.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn format_row(label: &str, r: &Report) -> String {
    format!(
        "| {label} | {:.4} | {:.4} | {} / {} | {:.0} / {:.0} / {:.0} ms | {:.3} | {} | {} | {} | {} |",
        r.coverage,
        r.min_message_coverage,
        r.complete_messages,
        r.messages,
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.latency_ms.max,
        r.copies_per_delivery,
        grouped(r.engine.ack_timeouts),
        grouped(r.engine.give_ups),
        grouped(r.engine.resends),
        grouped(r.shutdown_lost_acked),
    )
}

const ROW_ENV: &str = "RAINTREE_WAN_TABLE_FLAGS";

/// Plays one row in a fresh process of this test binary (see `child_process`).
fn spawn_row(label: &str, flags: &str) -> std::process::Child {
    child_process::spawn("row_child", ROW_ENV, &format!("{label}\t{flags}"))
}

fn collect_row(child: std::process::Child) -> String {
    child_process::tagged_line(child, "ROW ")
}

/// The run `spawn_row` asks for; a no-op in an ordinary test run.
#[test]
fn row_child() {
    let Ok(spec) = std::env::var(ROW_ENV) else {
        return;
    };
    let (label, flags) = spec.split_once('\t').unwrap();
    let mut cfg = WanConfig::new(100, Scenario::Steady, 50, 1);
    apply(&mut cfg, flags);
    println!("ROW {}", format_row(label, &run(&cfg).expect("run")));
}

/// Regenerates every row of the tables whose shared flags satisfy `pick`, all at once (each
/// run is single-threaded), and compares them with the document.
fn check(pick: impl Fn(&WanConfig) -> bool) {
    let tables: Vec<Table> = tables()
        .into_iter()
        .filter(|t| {
            let mut cfg = WanConfig::new(100, Scenario::Steady, 50, 1);
            apply(&mut cfg, &t.flags);
            pick(&cfg)
        })
        .collect();
    assert!(!tables.is_empty(), "SIMULATOR.md has such a table");
    for table in tables {
        let children: Vec<_> = table
            .rows
            .iter()
            .map(|row| {
                let (label, flags) = row_flags(&table, row);
                spawn_row(&label, &flags)
            })
            .collect();
        let printed: Vec<String> = children.into_iter().map(collect_row).collect();
        assert!(
            table.rows == printed,
            "the table `{}` differs from what the code prints:\n{}",
            table.flags,
            printed.join("\n")
        );
    }
}

/// Small enough for a debug build: the 12-node table, every scenario.
#[test]
fn small_wan_table_matches_the_code() {
    check(|cfg| cfg.nodes <= 12);
}

/// The 100-node table, minutes even in release:
/// `cargo test --release -p raintree --test wan_table -- --ignored`.
#[test]
#[ignore = "the 100-node table takes minutes; run with --release -- --ignored"]
fn wan_table_matches_the_code() {
    check(|cfg| cfg.nodes > 12);
}
