//! `raintree keygen` and `raintree node`: a config file in, an admin endpoint out.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Kills the node if the test fails before its graceful shutdown, so nothing outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn raintree() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raintree"))
}

#[tokio::test]
async fn node_serves_health_metrics_broadcast_and_shuts_down() {
    let key = raintree().arg("keygen").output().unwrap();
    assert!(key.status.success());
    let key: serde_json::Value = serde_json::from_slice(&key.stdout).unwrap();
    let secret = key["key"].as_str().unwrap();
    assert_eq!(secret.len(), 64);

    let dir = std::env::temp_dir().join(format!("raintree-node-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!("key = \"{secret}\"\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let mut node = KillOnDrop(
        raintree()
            .args(["node", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(node.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let ready: serde_json::Value =
        serde_json::from_str(first.strip_prefix("READY ").expect("READY line")).unwrap();
    assert_eq!(ready["address"], key["address"]);
    let admin = ready["admin"].as_str().unwrap().to_string();

    let http = reqwest::Client::new();
    let health: serde_json::Value = http
        .get(format!("http://{admin}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["address"], key["address"]);

    let b = http
        .post(format!("http://{admin}/broadcast"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert!(b.status().is_success());
    let too_big = http
        .post(format!("http://{admin}/broadcast"))
        .body(vec![0u8; 4 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), reqwest::StatusCode::BAD_REQUEST);
    let reason = too_big.text().await.unwrap();
    assert!(reason.contains("4194305"), "{reason}");

    // `fill` makes the payload at the node; it obeys the same limit.
    let filled = http
        .post(format!("http://{admin}/broadcast?fill=1000"))
        .send()
        .await
        .unwrap();
    assert!(filled.status().is_success());
    let over = http
        .post(format!(
            "http://{admin}/broadcast?fill={}",
            4 * 1024 * 1024 + 1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), reqwest::StatusCode::BAD_REQUEST);

    let metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("raintree_broadcasts_total 2"), "{metrics}");
    assert!(metrics.contains("raintree_broadcast_latency_seconds"));
    assert!(metrics.contains("raintree_transport_open_connections"));

    // The typed counters agree with the text exposition.
    let stats: serde_json::Value = http
        .get(format!("http://{admin}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["engine"]["broadcasts"], 2, "{stats}");
    assert_eq!(stats["engine"]["deliveries"], 0, "{stats}");
    assert_eq!(
        stats["transport"]["bytes_sent"], 0,
        "no peer, nothing sent: {stats}"
    );
    assert_eq!(stats["last_seq"], 0, "{stats}");
    // A node alone delivers nothing: the cursor answers an empty page.
    let page: Vec<serde_json::Value> = http
        .get(format!("http://{admin}/deliveries?after=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(page.is_empty());

    let s = http
        .post(format!("http://{admin}/shutdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), reqwest::StatusCode::ACCEPTED);
    let status = node.0.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(status.success(), "graceful shutdown exits 0");
}
