//! The LocalNet end to end: real `raintree node` processes on loopback, driven by the binary.

use std::process::Command;

fn raintree() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raintree"))
}

fn localnet_json(args: &[&str]) -> serde_json::Value {
    let out = raintree()
        .arg("localnet")
        .args(args)
        .arg("--json")
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "localnet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

#[test]
fn small_localnet_covers_every_node_and_reports_the_contract_keys() {
    let r = localnet_json(&["--nodes", "6", "--messages", "6", "--size", "512"]);
    for key in [
        "nodes",
        "live",
        "messages",
        "coverage",
        "latency_ms",
        "copies_per_delivery",
        "bytes_per_broadcast",
        "resends",
        "failed_nodes",
    ] {
        assert!(r.get(key).is_some(), "missing key {key} in {r}");
    }
    assert_eq!(r["nodes"], 6);
    assert_eq!(r["live"], 6);
    assert_eq!(r["messages"], 6);
    assert_eq!(r["coverage"], 1.0);
    assert_eq!(r["failed_nodes"].as_array().unwrap().len(), 0);
    // Exact strategy, no failures: every copy is a first copy.
    assert_eq!(r["copies_per_delivery"], 1.0);
    // Five receivers of 512 bytes each, at least, per broadcast.
    assert!(
        r["bytes_per_broadcast"].as_f64().unwrap() >= 5.0 * 512.0,
        "{r}"
    );
    assert!(r["latency_ms"]["max"].as_f64().unwrap() > 0.0);
}

#[test]
fn killed_nodes_are_routed_around_with_acks_and_cleanup() {
    let r = localnet_json(&[
        "--nodes",
        "9",
        "--messages",
        "4",
        "--kill",
        "30",
        "--cleanup",
        "on",
        "--ack-timeout-ms",
        "200",
    ]);
    assert_eq!(r["live"], 7);
    assert_eq!(r["coverage"], 1.0, "{r}");
}

#[test]
fn bad_config_names_the_field() {
    let dir = std::env::temp_dir().join(format!("raintree-cfg-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        format!("key = \"{}\"\nack_timeout_ms = \"soon\"\n", "22".repeat(32)),
    )
    .unwrap();
    let out = raintree()
        .args(["node", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ack_timeout_ms"), "{err}");
}
