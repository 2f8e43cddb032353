//! The shipped Grafana dashboard only queries metrics a node really exports.

use std::collections::HashSet;
use std::time::Duration;

use raintree::node::{Node, NodeConfig};
use raintree::transport::Identity;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/raintree.json"
);

/// Every sample name a node can export, derived from the `# TYPE` lines of its exposition (a
/// family with no sample yet still has one), so the list follows the code.
fn exported_names(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// The metric names (identifiers starting `raintree_`) in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else {
            if cur.starts_with("raintree_") {
                out.push(cur.clone());
            }
            cur.clear();
        }
    }
    out
}

#[tokio::test]
async fn every_dashboard_expression_names_an_exported_metric() {
    let (node, _streams) = Node::start(NodeConfig::new(
        Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        vec![],
    ))
    .await
    .unwrap();
    let exported = exported_names(&node.metrics_text());
    node.shutdown(Duration::from_secs(1)).await;
    assert!(
        exported.contains("raintree_deliveries_total"),
        "{exported:?}"
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut checked = 0;
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} names no raintree metric");
            for n in names {
                assert!(
                    exported.contains(&n),
                    "panel {:?}: {n} is not exported by a node",
                    p["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} names checked");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Deliveries",
        "latency",
        "Bytes",
        "Resends",
        "Queue drops",
        "Connections",
        "Refusals",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel for {want}: {titles:?}"
        );
    }
}

#[test]
fn names_are_found_in_expressions() {
    assert_eq!(
        metric_names("histogram_quantile(0.5, sum by (le) (rate(raintree_x_bucket[1m])))"),
        ["raintree_x_bucket"]
    );
    let e = exported_names("# TYPE raintree_a counter\n# TYPE raintree_h histogram\n");
    assert!(e.contains("raintree_a_total") && e.contains("raintree_h_count"));
    assert!(!e.contains("raintree_a"));
}
