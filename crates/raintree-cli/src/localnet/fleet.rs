//! The node processes: starting them, waiting until each is ready, killing and stopping them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use indicatif::ProgressBar;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cmd_node::READY_PREFIX;

/// A node that did not behave.
#[derive(Clone, Debug, Serialize)]
pub struct FailedNode {
    /// Sorted position in the peer list.
    pub position: usize,
    /// Its address.
    pub address: String,
    /// What went wrong.
    pub reason: String,
}

/// One node process and what the harness knows of it.
pub struct Member {
    /// Address, hex.
    pub address: String,
    /// Admin endpoint, once ready.
    pub admin: Option<SocketAddr>,
    /// The process while it runs.
    pub child: Option<Child>,
    /// Process id, kept after the child handle is gone.
    pub pid: Option<u32>,
}

/// Owns the node processes: dropping it kills any still running, so nothing is left behind.
pub struct Fleet {
    /// Members in sorted-address order.
    pub members: Vec<Member>,
    /// Configs and logs.
    pub dir: PathBuf,
}

impl Fleet {
    /// An empty fleet whose files live in `dir` (removed on drop).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            members: Vec::new(),
            dir,
        }
    }

    /// Starts `raintree node --config CONFIG` for a member with address `address`.
    pub fn spawn(&mut self, exe: &Path, config: &Path, address: String) -> Result<(), String> {
        let i = self.members.len();
        let child = spawn_node(exe, config, &self.dir.join(format!("node-{i}.log")))?;
        self.members.push(Member {
            address,
            admin: None,
            pid: child.id(),
            child: Some(child),
        });
        Ok(())
    }

    /// Sends SIGKILL to member `i` without waiting: the process is reaped later, and until
    /// then its `/proc` entry keeps its final CPU time.
    pub fn kill_now(&mut self, i: usize) {
        if let Some(c) = self.members[i].child.as_mut() {
            let _ = c.start_kill();
        }
    }

    /// Kills every node still running and waits until each has exited.
    pub async fn kill_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill().await;
            }
        }
    }

    /// Waits up to 15 s for each of `nodes` to exit after `/shutdown`; stragglers are killed
    /// and reported.
    pub async fn wait_stopped(&mut self, nodes: &[usize], failed: &mut Vec<FailedNode>) {
        for &i in nodes {
            let m = &mut self.members[i];
            let Some(child) = m.child.as_mut() else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => failed.push(FailedNode {
                    position: i,
                    address: m.address.clone(),
                    reason: format!("exited with {status}"),
                }),
                _ => {
                    let _ = child.kill().await;
                    failed.push(FailedNode {
                        position: i,
                        address: m.address.clone(),
                        reason: "did not stop within 15 s of /shutdown".into(),
                    });
                }
            }
            m.child = None;
        }
    }

    /// Reads each node's READY line (60 s overall); nodes that fail are killed and reported.
    pub async fn wait_ready(&mut self, progress: &ProgressBar, failed: &mut Vec<FailedNode>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for (i, m) in self.members.iter_mut().enumerate() {
            let Some(child) = m.child.as_mut() else {
                continue;
            };
            let Some(stdout) = child.stdout.take() else {
                continue;
            };
            let mut lines = BufReader::new(stdout).lines();
            let ready = tokio::time::timeout_at(deadline, async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(json) = line.strip_prefix(READY_PREFIX) {
                        let v: serde_json::Value = serde_json::from_str(json).ok()?;
                        return v["admin"].as_str()?.parse::<SocketAddr>().ok();
                    }
                }
                None
            })
            .await;
            match ready {
                Ok(Some(admin)) => m.admin = Some(admin),
                other => {
                    let reason = if other.is_err() {
                        "not ready within 60 s"
                    } else {
                        "exited before ready"
                    };
                    failed.push(FailedNode {
                        position: i,
                        address: m.address.clone(),
                        reason: reason.into(),
                    });
                    let _ = child.kill().await;
                    m.child = None;
                }
            }
            progress.inc(1);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut() {
                let _ = c.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_node(exe: &Path, config: &Path, log: &Path) -> Result<Child, String> {
    let log =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("node")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    // Node processes share two cores with hundreds of others: one runtime worker each is plenty.
    cmd.env("RAINTREE_WORKER_THREADS", "1");
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

/// Free listen ports below the kernel's ephemeral range (32768 and up on Linux), so that no
/// node's outbound sockets or port-0 admin listener can take a port another node was given.
pub fn reserve_ports(n: usize) -> Result<Vec<u16>, String> {
    const LOW: u16 = 10_000;
    const HIGH: u16 = 32_000;
    let span = HIGH - LOW;
    let start = rand::random::<u16>() % span;
    let ports: Vec<u16> = (0..span)
        .map(|i| LOW + (start + i) % span)
        .filter(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .take(n)
        .collect();
    if ports.len() < n {
        return Err(format!("only {} free ports in {LOW}..{HIGH}", ports.len()));
    }
    Ok(ports)
}
