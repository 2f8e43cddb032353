//! `raintree node --config FILE`: one node with its admin endpoint, until a signal or `/shutdown`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raintree::node::Node;

use crate::admin::{self, AdminState};
use crate::node_config::FileConfig;

/// The line a node prints on stdout once it accepts connections and admin requests.
pub const READY_PREFIX: &str = "READY ";

/// Runs a node from a config file; returns after a graceful shutdown.
pub async fn run(config: &Path) -> Result<(), String> {
    let file = FileConfig::load(config).map_err(|e| e.to_string())?;
    admin::check_loopback(file.admin)?;
    let node_config = file.node_config().map_err(|e| e.to_string())?;
    let (node, mut streams) = Node::start(node_config)
        .await
        .map_err(|e| format!("cannot start node: {e}"))?;
    let admin_listener = tokio::net::TcpListener::bind(file.admin)
        .await
        .map_err(|e| format!("field `admin`: cannot bind {}: {e}", file.admin))?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    let state = AdminState::new(node.clone(), file.max_payload_bytes);

    let recorder = {
        let state = state.clone();
        tokio::spawn(async move {
            while let Some(d) = streams.deliveries.recv().await {
                state.record(&d, raintree::node::unix_micros());
            }
        })
    };
    // The binary answers requests with their own bytes, which is what tests and demos need.
    let echo = tokio::spawn(async move {
        while let Some(req) = streams.requests.recv().await {
            req.responder.respond(req.payload);
        }
    });

    let stop = tokio_util_stop(state.clone());
    let admin_task = {
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ =
                admin::serve(admin_listener, state, async move { stop.cancelled().await }).await;
        })
    };
    println!(
        "{READY_PREFIX}{}",
        serde_json::json!({
            "address": node.address().to_hex(),
            "listen": node.local_addr().to_string(),
            "admin": admin_addr.to_string(),
        })
    );
    tracing::info!(address = %node.address(), listen = %node.local_addr(), admin = %admin_addr, "node ready");

    stop.cancelled().await;
    tracing::info!("shutting down");
    let report = node
        .shutdown(Duration::from_secs(file.shutdown_deadline_s))
        .await;
    tracing::info!(?report, "shut down");
    let _ = admin_task.await;
    recorder.abort();
    echo.abort();
    Ok(())
}

/// A token cancelled by SIGINT, SIGTERM or the admin `/shutdown` route.
fn tokio_util_stop(state: Arc<AdminState>) -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async move {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
            _ = state.shutdown.notified() => {}
        }
        t.cancel();
    });
    token
}
