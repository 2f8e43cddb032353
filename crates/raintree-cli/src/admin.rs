//! The node's admin HTTP endpoint, for loopback use by operators, tests and the LocalNet.
//!
//! `GET /health`, `GET /metrics` (Prometheus text), `POST /broadcast` (body = payload),
//! `GET /deliveries` (what this node delivered, with latencies), `POST /shutdown`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use raintree::node::{Delivery, Node};
use serde::Serialize;
use tokio::sync::Notify;

/// Deliveries kept for `/deliveries`; older ones are forgotten.
const DELIVERY_LOG: usize = 100_000;

/// One delivery as `/deliveries` reports it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DeliveryRecord {
    /// Originator address, hex.
    pub origin: String,
    /// The broadcast nonce.
    pub nonce: u64,
    /// Microseconds from origination to delivery here (same-host clocks in a LocalNet);
    /// `null` for direct messages, which carry no origin timestamp.
    pub latency_us: Option<u64>,
    /// Hops from the originator.
    pub hops: u32,
}

impl DeliveryRecord {
    /// The record of `d` delivered at `now_us` (microseconds since the Unix epoch).
    pub fn new(d: &Delivery, now_us: u64) -> Self {
        Self {
            origin: d.id.origin.to_hex(),
            nonce: d.id.nonce,
            latency_us: (d.origin_time_us > 0).then(|| now_us.saturating_sub(d.origin_time_us)),
            hops: d.hops,
        }
    }
}

/// What the admin handlers share.
pub struct AdminState {
    node: Node,
    max_payload: usize,
    log: Mutex<VecDeque<DeliveryRecord>>,
    /// Notified when `/shutdown` is called.
    pub shutdown: Notify,
}

impl AdminState {
    /// State for `node` with an empty delivery log.
    pub fn new(node: Node, max_payload: usize) -> Arc<Self> {
        Arc::new(Self {
            node,
            max_payload,
            log: Mutex::new(VecDeque::new()),
            shutdown: Notify::new(),
        })
    }

    /// Remembers a delivery for `/deliveries`.
    pub fn record(&self, d: &Delivery, now_us: u64) {
        let rec = DeliveryRecord::new(d, now_us);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == DELIVERY_LOG {
            log.pop_front();
        }
        log.push_back(rec);
    }
}

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    // One byte over the payload limit still reaches the node, whose typed error names the
    // limit; anything larger is cut off by the HTTP layer (413) before it is buffered.
    let body_limit = state.max_payload.saturating_add(1);
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/broadcast", post(broadcast))
        .route("/deliveries", get(deliveries))
        .route("/shutdown", post(shutdown))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves the admin routes on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop)
        .await
}

async fn health(State(s): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "address": s.node.address().to_hex(),
        "listen": s.node.local_addr().to_string(),
        "peers": s.node.peers().len(),
    }))
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.node.metrics_text(),
    )
        .into_response()
}

async fn broadcast(State(s): State<Arc<AdminState>>, body: Bytes) -> Response {
    match s.node.broadcast(body).await {
        Ok(id) => Json(serde_json::json!({
            "origin": id.origin.to_hex(),
            "nonce": id.nonce,
        }))
        .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn deliveries(State(s): State<Arc<AdminState>>) -> Json<Vec<DeliveryRecord>> {
    let log = s.log.lock().unwrap_or_else(|p| p.into_inner());
    Json(log.iter().cloned().collect())
}

async fn shutdown(State(s): State<Arc<AdminState>>) -> StatusCode {
    s.shutdown.notify_one();
    StatusCode::ACCEPTED
}

/// The socket address is loopback; the admin endpoint must never face the network.
pub fn check_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!("field `admin`: {addr} is not a loopback address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raintree_proto::{Address, MessageId};

    fn delivery(origin_time_us: u64) -> Delivery {
        Delivery {
            id: MessageId {
                origin: Address::from_index(3),
                nonce: 9,
            },
            payload: Bytes::from_static(b"x"),
            origin_time_us,
            hops: 2,
        }
    }

    #[test]
    fn latency_only_for_timestamped_messages() {
        assert_eq!(
            DeliveryRecord::new(&delivery(100), 250).latency_us,
            Some(150)
        );
        // Direct messages carry no origin time: no latency rather than "since 1970".
        assert_eq!(DeliveryRecord::new(&delivery(0), 250).latency_us, None);
        // A clock behind the originator's never yields a huge wrapped number.
        assert_eq!(DeliveryRecord::new(&delivery(300), 250).latency_us, Some(0));
    }
}
