//! The docs' simulator tables are golden outputs: the simulator is deterministic, so each
//! table is regenerated here from the same settings and must match its document row for row.

use std::process::Command;

use serde_json::Value;

const DESIGN: &str = include_str!("../../../docs/DESIGN.md");
const SIMULATOR: &str = include_str!("../../../docs/SIMULATOR.md");

/// What `raintree ARGS` printed on stdout; fails the test if it did not succeed.
fn raintree(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_raintree"))
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One `raintree sim --json` run.
fn sim(args: &[&str]) -> Value {
    let args = [&["sim"], args, &["--json"]].concat();
    serde_json::from_slice(&raintree(&args)).expect("one JSON object")
}

fn int(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
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

/// The table in `doc` whose header line starts with `header`, as its data rows.
fn doc_rows(doc: &str, header: &str) -> Vec<String> {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "the doc has a table `{header}`");
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(str::to_string)
        .collect()
}

#[test]
fn cleanup_table_matches_the_simulator() {
    let mut rows = Vec::new();
    for strategy in ["reference", "exact"] {
        for cleanup in ["off", "on"] {
            let r = sim(&[
                "--nodes",
                "2000",
                "--strategy",
                strategy,
                "--dead-percent",
                "10",
                "--cleanup",
                cleanup,
                "--seed",
                "1",
            ]);
            let full = match r["time_to_full_ms"].as_f64() {
                Some(ms) => format!("{:.2} s", ms / 1000.0),
                None => "never".into(),
            };
            rows.push(format!(
                "| {strategy} | {cleanup} | {} / {} | {} | {} | {:.2} | {full} | {} |",
                grouped(int(&r, "covered")),
                grouped(int(&r, "live")),
                grouped(int(&r, "sends")),
                grouped(int(&r, "resends")),
                r["rmr"].as_f64().unwrap(),
                grouped(int(&r, "igyw_sent")),
            ));
        }
    }
    assert_eq!(
        doc_rows(DESIGN, "| strategy | clean-up | covered / live |"),
        rows
    );
}

#[test]
fn hostile_table_matches_the_simulator() {
    let n = 2000u64;
    let mut rows = Vec::new();
    let mut clean_sends = 0;
    for (kind, target) in [
        ("none", ""),
        ("blackhole", "100% honest, sends ≤ 2.5x(N-1)"),
        ("forge", "zero forged deliveries"),
        ("inflate", "sends within 1.1x of none"),
        ("flood", ""),
    ] {
        let mut args = vec![
            "--nodes",
            "2000",
            "--strategy",
            "exact",
            "--acks",
            "on",
            "--cleanup",
            "on",
            "--signatures",
            "--seed",
            "1",
        ];
        if kind != "none" {
            args.extend(["--hostile-percent", "10", "--hostile", kind]);
        }
        let r = sim(&args);
        let sends = int(&r, "sends");
        if kind == "none" {
            clean_sends = sends;
        }
        let (honest, covered) = (int(&r, "honest"), int(&r, "honest_covered"));
        let target = if target.is_empty() {
            String::new()
        } else {
            format!(" {target}")
        };
        rows.push(format!(
            "| {kind} | {covered} of {honest} | {sends} | {:.2} | {} | {} |{target} |",
            sends as f64 / (n - 1) as f64,
            int(&r, "igyw_sent"),
            int(&r, "forged_deliveries"),
        ));
        // The targets themselves, so a drift that breaks one fails loudly, not as a diff.
        match kind {
            "blackhole" => assert!(covered == honest && sends as f64 <= 2.5 * (n - 1) as f64),
            "forge" => assert_eq!(int(&r, "forged_deliveries"), 0),
            "inflate" => assert!(sends as f64 <= 1.1 * clean_sends as f64),
            _ => {}
        }
    }
    assert_eq!(
        doc_rows(SIMULATOR, "| hostile | honest covered | sends |"),
        rows
    );
}

#[test]
fn redundancy_table_matches_the_simulator() {
    let settings: [(&str, &[&str]); 2] = [
        (
            "every node knows 90% of peers",
            &["--partial-view-percent", "90"],
        ),
        (
            "10% dead, no ACKs",
            &["--dead-percent", "10", "--acks", "off"],
        ),
    ];
    let mut rows = Vec::new();
    for (label, base) in settings {
        for (i, red) in ["off", "right", "both"].into_iter().enumerate() {
            let run = |strategy: &str| {
                let mut args = vec![
                    "--nodes",
                    "2000",
                    "--broadcasts",
                    "5",
                    "--strategy",
                    strategy,
                ];
                args.extend_from_slice(base);
                args.extend(["--redundancy", red]);
                let r = sim(&args);
                let covered = r["covered_mean"].as_f64().unwrap().round() as u64;
                let sends = (int(&r, "sends") as f64 / 5.0).round() as u64;
                (covered, int(&r, "live"), sends)
            };
            let ((rc, live, rs), (ec, _, es)) = (run("reference"), run("exact"));
            let (name, rc, ec) = if i == 0 {
                (
                    format!("{label}, redundancy {red}"),
                    format!("{} / {}", grouped(rc), grouped(live)),
                    format!("{} / {}", grouped(ec), grouped(live)),
                )
            } else {
                (format!("same, redundancy {red}"), grouped(rc), grouped(ec))
            };
            rows.push(format!(
                "| {name} | {rc} | {ec} | {} / {} |",
                grouped(rs),
                grouped(es)
            ));
        }
    }
    assert_eq!(doc_rows(DESIGN, "| setting | reference | exact |"), rows);
}

/// `raintree scale-table --max-power P` as printed.
fn scale_table(max_power: u32) -> String {
    let out = raintree(&["scale-table", "--max-power", &max_power.to_string()]);
    String::from_utf8(out).expect("UTF-8")
}

/// The text block of SIMULATOR.md that holds `raintree scale-table`'s output, as lines.
fn documented_scale_table() -> Vec<&'static str> {
    let start = SIMULATOR
        .find("```text\nOne broadcast from sorted position 0;")
        .expect("SIMULATOR.md has the scale table")
        + "```text\n".len();
    let len = SIMULATOR[start..].find("```").expect("the block ends");
    SIMULATOR[start..start + len].lines().collect()
}

/// The largest exponent `cargo test` regenerates: N = 27 ... 2,187 takes seconds in a debug
/// build, where the full table's 177,147-node runs take minutes.
const CHEAP_MAX_POWER: u32 = 7;

#[test]
fn scale_table_matches_the_simulator_up_to_2187_nodes() {
    let printed = scale_table(CHEAP_MAX_POWER);
    let printed: Vec<&str> = printed.lines().collect();
    let documented = documented_scale_table();
    // Every row is its own seeded run, so a smaller table is the full one cut short.
    assert!(
        documented.len() > printed.len(),
        "the documented table goes beyond 3^{CHEAP_MAX_POWER}"
    );
    assert_eq!(documented[..printed.len()], printed[..]);
}

/// The whole documented table. Run it in release, where it takes seconds:
/// `cargo test --release -p raintree-cli --test docs_tables -- --ignored`.
#[test]
#[ignore = "minutes in a debug build; run with --release -- --ignored"]
fn scale_table_matches_the_simulator() {
    let printed = scale_table(11);
    assert_eq!(
        documented_scale_table(),
        printed.lines().collect::<Vec<_>>()
    );
}
