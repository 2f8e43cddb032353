//! The LocalNet end to end: real `raintree node` processes on loopback, driven by the binary.

use std::process::Command;

/// LocalNets pick free ports by probing; running them one at a time keeps two tests of this
/// binary from probing the same port before either binds it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn raintree() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raintree"))
}

fn localnet_json(args: &[&str]) -> serde_json::Value {
    let _serial = serial();
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
    // A long ACK deadline: a loaded CI machine must not turn slow ACKs into resends.
    let r = localnet_json(&[
        "--nodes",
        "6",
        "--messages",
        "6",
        "--size",
        "512",
        "--ack-timeout-ms",
        "5000",
    ]);
    for key in [
        "nodes",
        "live",
        "messages",
        "coverage",
        "latency_ms",
        "copies_per_delivery",
        "bytes_per_broadcast",
        "loopback_bytes_per_broadcast",
        "throughput_msgs_per_s",
        "cpu_ms_per_broadcast",
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
    assert!(r["throughput_msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    // Six processes did at least some work for six broadcasts.
    assert!(r["cpu_ms_per_broadcast"].as_f64().unwrap() >= 0.0, "{r}");
    // The loopback carries at least the transport's frames (plus encryption and headers).
    let lo = r["loopback_bytes_per_broadcast"].as_f64().unwrap();
    assert!(lo >= r["bytes_per_broadcast"].as_f64().unwrap(), "{r}");
}

#[test]
fn nodes_killed_during_the_run_are_told_apart_and_not_counted_as_receivers() {
    // 5 broadcasts a second: the kill at 300 ms lands between the second and the third.
    let r = localnet_json(&[
        "--nodes",
        "9",
        "--messages",
        "5",
        "--rate",
        "5",
        "--kill",
        "30",
        "--kill-after-ms",
        "300",
        "--cleanup",
        "on",
        "--ack-timeout-ms",
        "200",
    ]);
    assert_eq!(r["killed_before"], 0, "{r}");
    assert_eq!(r["killed_during"], 2, "{r}");
    assert_eq!(r["kill_after_ms"], 300, "{r}");
    assert_eq!(r["live"], 7, "{r}");
    // Coverage is of the nodes alive at the end; ACK timeouts route around the dead.
    assert_eq!(r["coverage"], 1.0, "{r}");
    assert_eq!(r["complete_messages"], 5, "{r}");
    assert_eq!(r["failed_nodes"].as_array().unwrap().len(), 0, "{r}");
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
    assert_eq!(r["killed_before"], 2, "{r}");
    assert_eq!(r["killed_during"], 0, "{r}");
    assert_eq!(r["coverage"], 1.0, "{r}");
}

/// `chromium --headless --dump-dom` of a local file, with every network route closed.
fn chromium_dom(page: &std::path::Path, profile: &std::path::Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            // The page must need no network: any fetch would fail here.
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (install it with `apt-get install -y chromium`)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered DOM of the figure with id `id`.
fn figure<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no figure {id}"));
    let end = dom[start..].find("</figure>").expect("figure closed") + start;
    &dom[start..end]
}

#[test]
fn html_report_renders_in_headless_chromium_with_non_empty_charts() {
    let dir = std::env::temp_dir().join(format!("raintree-report-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let r = localnet_json(&[
        "--nodes",
        "4",
        "--messages",
        "5",
        "--ack-timeout-ms",
        "5000",
        "--report",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(r["coverage"], 1.0, "{r}");
    let page = dir.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("src=") && !html.contains("href=") && !html.contains("<script"),
        "the page must be self-contained"
    );
    let dom = chromium_dom(&page, &dir.join("chromium-profile"));
    std::fs::remove_dir_all(&dir).unwrap();
    for id in ["coverage", "latency-cdf", "copies", "bytes", "tree"] {
        assert!(figure(&dom, id).contains("<svg"), "{id} has no chart");
    }
    // Non-empty: a line per message plus the median; both CDF lines; a bar per node on top of
    // the background; a dot per node in the tree.
    assert!(figure(&dom, "coverage").matches("<polyline").count() >= 6);
    assert!(figure(&dom, "latency-cdf").matches("<polyline").count() >= 2);
    assert!(figure(&dom, "copies").matches("<rect").count() > 4);
    assert!(figure(&dom, "bytes").matches("<rect").count() > 4);
    assert!(figure(&dom, "tree").matches("<circle").count() >= 4);
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

/// Pids of the running processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let mut fields = rest.split(' ');
        let _state = fields.next();
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn interrupt_leaves_no_node_process_behind() {
    use std::io::{BufRead, BufReader};
    let _serial = serial();
    let mut child = raintree()
        .args([
            "localnet",
            "--nodes",
            "4",
            "--messages",
            "100000",
            "--rate",
            "1",
            "--warmup",
            "off",
        ])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    // The LocalNet logs once every node has answered; then all four are running.
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("nodes ready"));
    assert!(ready, "localnet never reported its nodes ready");
    let nodes = children_of(child.id());
    assert_eq!(nodes.len(), 4, "four node processes: {nodes:?}");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(!exit.success(), "an interrupted run reports failure");
    for pid in nodes {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "node process {pid} outlived the interrupted localnet"
        );
    }
}
