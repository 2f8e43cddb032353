//! The `targets` and `sim` commands through the real binary.

use std::process::Command;

fn raintree_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_raintree"))
        .args(args)
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "raintree {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON value on stdout")
}

#[test]
fn sim_reproduces_the_spec_table_for_12_nodes() {
    let r = raintree_json(&[
        "sim",
        "--strategy",
        "reference",
        "--nodes",
        "12",
        "--acks",
        "off",
        "--forward-duplicates",
        "--per-node",
        "--json",
    ]);
    #[rustfmt::skip]
    let want = [(1, 6), (3, 2), (2, 2), (2, 0), (2, 4), (3, 2), (2, 2), (2, 0),
                (2, 4), (3, 2), (2, 2), (2, 0)];
    let rows = r["per_node"].as_array().expect("per_node");
    assert_eq!(rows.len(), 12);
    for (i, (row, (reads, writes))) in rows.iter().zip(want).enumerate() {
        assert_eq!(row["position"], i);
        assert_eq!(
            (row["reads"].as_u64(), row["writes"].as_u64()),
            (Some(reads), Some(writes)),
            "position {i}"
        );
    }
    for key in [
        "nodes",
        "live",
        "covered",
        "sends",
        "acks_sent",
        "resends",
        "igyw_sent",
        "max_hops",
        "rmr",
        "time_to_full_ms",
    ] {
        assert!(r.get(key).is_some(), "missing {key}");
    }
    assert_eq!(r["nodes"], 12);
    assert_eq!(r["covered"], 12);
    assert_eq!(r["acks_sent"], 0);
}

#[test]
fn sim_is_reproducible_and_reports_dead_nodes() {
    let args = [
        "sim",
        "--nodes",
        "300",
        "--dead-percent",
        "10",
        "--cleanup",
        "on",
        "--strategy",
        "exact",
        "--seed",
        "4",
        "--json",
    ];
    let a = raintree_json(&args);
    assert_eq!(a, raintree_json(&args));
    assert_eq!(a["live"], 270);
    assert_eq!(a["covered"], a["live"]);
}

#[test]
fn targets_lists_levels_from_l_down_to_1() {
    let rows = raintree_json(&[
        "targets",
        "--nodes",
        "12",
        "--strategy",
        "reference",
        "--json",
    ]);
    let want = serde_json::json!([
        {"level": 3, "range": 12, "targets": [4, 8]},
        {"level": 2, "range": 8, "targets": [2, 5]},
        {"level": 1, "range": 5, "targets": [1, 3]},
    ]);
    assert_eq!(rows, want);
    let exact = raintree_json(&["targets", "--nodes", "81", "--strategy", "exact", "--json"]);
    assert_eq!(exact.as_array().map(Vec::len), Some(4));
    assert_eq!(exact[0]["targets"], serde_json::json!([27, 54]));
}

#[test]
fn bad_options_fail_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_raintree"))
        .args(["sim", "--nodes", "10", "--originator", "10"])
        .output()
        .expect("binary runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("originator"));
}

#[test]
fn sim_defaults_to_the_nodes_strategy_and_names_the_size_as_localnet_does() {
    let base = ["sim", "--nodes", "27", "--dead-percent", "10", "--json"];
    let default = raintree_json(&base);
    let exact = raintree_json(&[&base[..], &["--strategy", "exact"]].concat());
    let reference = raintree_json(&[&base[..], &["--strategy", "reference"]].concat());
    assert_eq!(
        default, exact,
        "the simulator's default is the node's, exact"
    );
    assert_ne!(default, reference);
    let size = raintree_json(&[&base[..], &["--size", "4096"]].concat());
    let alias = raintree_json(&[&base[..], &["--payload-size", "4096"]].concat());
    assert_eq!(size, alias, "--payload-size stays an alias of --size");
}
