//! `--prometheus`: a real Prometheus server scraping every node's `/metrics` during the run,
//! whose PromQL answers must agree with the report.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::process::{Child, Command};

/// How often Prometheus scrapes each node: short, so a run of a few seconds has many samples.
const SCRAPE_MS: u64 = 250;

/// Prometheus's totals over the broadcast phase, which matched the report's.
#[derive(Debug, Serialize, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromCheck {
    /// `raintree_deliveries_total` increase over nodes alive at the end (killed nodes'
    /// series end with them, so they are left out on both sides).
    pub deliveries: u64,
    /// `raintree_transport_bytes_sent_total` increase over nodes alive at the end.
    pub bytes_sent: u64,
    /// `raintree_resends_total` increase over nodes alive at the end.
    pub resends: u64,
    /// Scrapes of the nodes that Prometheus recorded over the whole run.
    pub scrapes: u64,
}

/// A running `prometheus` server with its own config and data directory.
pub struct Prometheus {
    child: Option<Child>,
    url: String,
    http: reqwest::Client,
    instances: HashMap<String, usize>,
}

impl Prometheus {
    /// Writes a scrape config for `targets` (position, admin address), starts `prometheus` on a
    /// free loopback port with its data under `dir`, and waits until it is ready.
    pub async fn start(targets: &[(usize, SocketAddr)], dir: &Path) -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for prometheus: {e}"))?
            .port();
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets))
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.join("prometheus.log")).map_err(|e| e.to_string())?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start prometheus ({e}); install it with \
                     `apt-get install -y prometheus`"
                )
            })?;
        let mut p = Self {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?,
            instances: targets.iter().map(|(i, a)| (a.to_string(), *i)).collect(),
        };
        p.wait_ready(dir).await?;
        Ok(p)
    }

    async fn wait_ready(&mut self, dir: &Path) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .http
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || tokio::time::Instant::now() >= deadline {
                let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
                return Err(format!("prometheus did not become ready: {log}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until Prometheus holds a scrape of every node of `nodes` taken after `after`
    /// (seconds since the Unix epoch), so a query at a later time sees counters read then.
    pub async fn wait_scraped_after(&self, nodes: &[usize], after: f64) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // timestamp() gives the sample's own time only when applied to a bare selector.
            let scraped = self.query("timestamp(up{job=\"raintree\"})", None).await?;
            let fresh = nodes
                .iter()
                .all(|i| scraped.get(i).is_some_and(|&t| t > after));
            if fresh {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("prometheus did not scrape every node within 30 s".into());
            }
            // A scrape comes every SCRAPE_MS; asking a few times per interval is enough.
            tokio::time::sleep(Duration::from_millis(SCRAPE_MS / 4)).await;
        }
    }

    /// An instant PromQL query (at `time`, or now); values by node position.
    pub async fn query(
        &self,
        expr: &str,
        time: Option<f64>,
    ) -> Result<HashMap<usize, f64>, String> {
        let mut form = vec![("query", expr.to_string())];
        if let Some(t) = time {
            form.push(("time", format!("{t:.3}")));
        }
        let v: serde_json::Value = self
            .http
            .post(format!("{}/api/v1/query", self.url))
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("prometheus query {expr}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("prometheus query {expr}: {e}"))?;
        if v["status"] != "success" {
            return Err(format!("prometheus query {expr}: {v}"));
        }
        let mut out = HashMap::new();
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let instance = r["metric"]["instance"].as_str().unwrap_or_default();
            let value = r["value"][1].as_str().and_then(|s| s.parse::<f64>().ok());
            if let (Some(&i), Some(value)) = (self.instances.get(instance), value) {
                out.insert(i, value);
            }
        }
        Ok(out)
    }

    /// Prometheus's increases of the checked counters between `base` and `end` (seconds since
    /// the Unix epoch) over the nodes `live`, and its scrape count since `since`.
    pub async fn totals(
        &self,
        live: &[usize],
        base: f64,
        end: f64,
        since: f64,
    ) -> Result<PromCheck, String> {
        let mut check = PromCheck::default();
        for (metric, field) in [
            ("raintree_deliveries_total", &mut check.deliveries),
            ("raintree_transport_bytes_sent_total", &mut check.bytes_sent),
            ("raintree_resends_total", &mut check.resends),
        ] {
            let expr = format!("sum by (instance) ({metric})");
            let before = self.query(&expr, Some(base)).await?;
            let after = self.query(&expr, Some(end)).await?;
            for i in live {
                let b = before.get(i).copied().unwrap_or(0.0);
                let a = after
                    .get(i)
                    .copied()
                    .ok_or_else(|| format!("prometheus has no {metric} for node {i}"))?;
                *field += (a - b).round() as u64;
            }
        }
        let window = ((end - since).ceil() as u64).max(1);
        let scrapes = self
            .query(
                &format!("count_over_time(up{{job=\"raintree\"}}[{window}s])"),
                Some(end),
            )
            .await?;
        check.scrapes = scrapes.values().sum::<f64>() as u64;
        Ok(check)
    }

    /// Stops the server with SIGTERM so it closes its database cleanly (10 s, then SIGKILL).
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still its own.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// The scrape config: one static target per node admin endpoint, labelled with its position.
fn scrape_config(targets: &[(usize, SocketAddr)]) -> String {
    let mut s = format!(
        "global:\n  scrape_interval: {SCRAPE_MS}ms\n  scrape_timeout: {}ms\n\
         scrape_configs:\n  - job_name: raintree\n    metrics_path: /metrics\n    static_configs:\n",
        SCRAPE_MS * 4 / 5
    );
    for (i, addr) in targets {
        s.push_str(&format!(
            "      - targets: [\"{addr}\"]\n        labels: {{position: \"{i}\"}}\n"
        ));
    }
    s
}

/// Compares Prometheus's totals with the harness's; any difference is an error naming it.
pub fn compare(prom: &PromCheck, report: &PromCheck) -> Result<(), String> {
    let mut diffs = Vec::new();
    for (name, p, r) in [
        ("deliveries", prom.deliveries, report.deliveries),
        ("bytes sent", prom.bytes_sent, report.bytes_sent),
        ("resends", prom.resends, report.resends),
    ] {
        if p != r {
            diffs.push(format!("{name}: prometheus {p}, report {r}"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "prometheus disagrees with the report: {}",
            diffs.join("; ")
        ))
    }
}

/// Where Prometheus keeps its config, log and data for a run in `run_dir`.
pub fn dir_in(run_dir: &Path) -> PathBuf {
    run_dir.join("prometheus")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_node_at_the_short_interval() {
        let t = [
            (0, "127.0.0.1:4000".parse().unwrap()),
            (1, "127.0.0.1:4001".parse().unwrap()),
        ];
        let c = scrape_config(&t);
        assert!(c.contains("scrape_interval: 250ms"), "{c}");
        assert!(c.contains("\"127.0.0.1:4000\""), "{c}");
        assert!(c.contains("\"127.0.0.1:4001\""), "{c}");
        assert_eq!(c.matches("- targets:").count(), 2);
    }

    #[test]
    fn any_difference_is_an_error() {
        let a = PromCheck {
            deliveries: 10,
            bytes_sent: 100,
            resends: 0,
            scrapes: 5,
        };
        assert!(compare(&a, &PromCheck { scrapes: 0, ..a }).is_ok());
        let e = compare(&a, &PromCheck { resends: 1, ..a }).unwrap_err();
        assert!(e.contains("resends"), "{e}");
    }
}
