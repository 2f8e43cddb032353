//! The node's admin HTTP endpoint, for loopback use by operators, tests and the LocalNet.
//!
//! `GET /health`, `GET /metrics` (Prometheus text), `GET /stats` (typed JSON counters),
//! `POST /broadcast` (body = payload; or `?fill=N` and no body: N random bytes made here), `GET /deliveries[?after=SEQ]` (what this node delivered,
//! with latencies, from a cursor), `GET /deliveries/wait?seq=N&timeout_ms=T` (answers once the
//! log reaches `N` records or after `T`), `POST /shutdown`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use raintree::node::{Delivery, Node};
use raintree_proto::broadcast::Stats;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

/// Deliveries kept for `/deliveries`; older ones are forgotten. Small, so a long-running node's
/// memory levels off (a soak measures the node, not this log); readers page with the cursor.
pub const DELIVERY_LOG: usize = 2_000;

/// Most records one `/deliveries` answer carries; a client with a cursor asks again for more.
pub const PAGE: usize = 10_000;

/// One delivery as `/deliveries` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Position in this node's delivery log, from 1; `?after=` takes the last one seen.
    #[serde(default)]
    pub seq: u64,
    /// Originator address, hex.
    pub origin: String,
    /// The broadcast nonce.
    pub nonce: u64,
    /// Microseconds from origination to delivery here (same-host clocks in a LocalNet);
    /// `null` for direct messages, which carry no origin timestamp.
    pub latency_us: Option<u64>,
    /// Hops from the originator.
    pub hops: u32,
    /// When it was delivered here, microseconds since the Unix epoch.
    #[serde(default)]
    pub at_us: u64,
}

impl DeliveryRecord {
    /// The record of `d` delivered at `now_us` (microseconds since the Unix epoch).
    pub fn new(d: &Delivery, now_us: u64) -> Self {
        Self {
            seq: 0,
            origin: d.id.origin.to_hex(),
            nonce: d.id.nonce,
            latency_us: (d.origin_time_us > 0).then(|| now_us.saturating_sub(d.origin_time_us)),
            hops: d.hops,
            at_us: now_us,
        }
    }
}

/// The `?after=` cursor of `/deliveries`.
#[derive(Debug, Default, Deserialize)]
pub struct Cursor {
    /// Only records with a larger `seq` are returned.
    #[serde(default)]
    pub after: u64,
}

/// The query of `/deliveries/wait`.
#[derive(Debug, Deserialize)]
pub struct WaitFor {
    /// Answer once the log holds a record with this `seq`.
    pub seq: u64,
    /// Answer anyway after this many milliseconds.
    pub timeout_ms: u64,
}

/// Transport totals over every message kind, as `/stats` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransportTotals {
    /// Frame bytes written (before encryption).
    pub bytes_sent: u64,
    /// Frame bytes read (after decryption).
    pub bytes_received: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Messages dropped before reaching the wire.
    pub queue_drops: u64,
    /// Inbound connections refused.
    pub refused_connections: u64,
    /// Connections open now, both directions.
    pub open_connections: u64,
}

impl TransportTotals {
    /// Sums the transport families of a node's exposition over their labels.
    ///
    /// The transport keeps its byte counters private to its registry, so the node's own text is
    /// the one source that already holds them; parsing it here keeps every client typed.
    pub fn from_metrics_text(text: &str) -> Self {
        let m = crate::metrics_text::sum_by_name(text);
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0) as u64;
        Self {
            bytes_sent: get("raintree_transport_bytes_sent_total"),
            bytes_received: get("raintree_transport_bytes_received_total"),
            frames_sent: get("raintree_transport_frames_sent_total"),
            frames_received: get("raintree_transport_frames_received_total"),
            queue_drops: get("raintree_transport_queue_drops_total"),
            refused_connections: get("raintree_transport_refused_connections_total"),
            open_connections: get("raintree_transport_open_connections"),
        }
    }
}

/// What `GET /stats` answers.
#[derive(Debug, Serialize)]
pub struct StatsBody {
    /// The protocol engine's counters.
    pub engine: Stats,
    /// The transport's totals.
    pub transport: TransportTotals,
    /// The `seq` of the newest delivery record.
    pub last_seq: u64,
}

/// What the admin handlers share.
pub struct AdminState {
    node: Node,
    max_payload: usize,
    log: Mutex<DeliveryLog>,
    /// The newest `seq`, for clients waiting on `/deliveries/wait`.
    last_seq: watch::Sender<u64>,
    /// Notified when `/shutdown` is called.
    pub shutdown: Notify,
}

impl AdminState {
    /// State for `node` with an empty delivery log.
    pub fn new(node: Node, max_payload: usize) -> Arc<Self> {
        Arc::new(Self {
            node,
            max_payload,
            log: Mutex::new(DeliveryLog::default()),
            last_seq: watch::Sender::new(0),
            shutdown: Notify::new(),
        })
    }

    /// Remembers a delivery for `/deliveries`.
    pub fn record(&self, d: &Delivery, now_us: u64) {
        let rec = DeliveryRecord::new(d, now_us);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push(rec);
        self.last_seq.send_replace(log.last_seq);
    }
}

/// The newest deliveries, numbered from 1 so a client can resume after the last it saw.
#[derive(Default)]
struct DeliveryLog {
    records: VecDeque<DeliveryRecord>,
    last_seq: u64,
}

impl DeliveryLog {
    fn push(&mut self, mut rec: DeliveryRecord) {
        self.last_seq += 1;
        rec.seq = self.last_seq;
        if self.records.len() == DELIVERY_LOG {
            self.records.pop_front();
        }
        self.records.push_back(rec);
    }

    /// Up to [`PAGE`] records after `after`, oldest first.
    fn after(&self, after: u64) -> Vec<DeliveryRecord> {
        // Sequence numbers are contiguous, so the first wanted record's index is arithmetic.
        let first = self.records.front().map_or(0, |r| r.seq);
        let skip = after.saturating_add(1).saturating_sub(first) as usize;
        self.records.iter().skip(skip).take(PAGE).cloned().collect()
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
        .route("/stats", get(stats))
        .route("/broadcast", post(broadcast))
        .route("/deliveries", get(deliveries))
        .route("/deliveries/wait", get(deliveries_wait))
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

async fn stats(State(s): State<Arc<AdminState>>) -> Json<StatsBody> {
    let last_seq = s.log.lock().unwrap_or_else(|p| p.into_inner()).last_seq;
    Json(StatsBody {
        engine: s.node.stats(),
        transport: TransportTotals::from_metrics_text(&s.node.metrics_text()),
        last_seq,
    })
}

/// The query of `POST /broadcast`.
#[derive(Debug, Default, Deserialize)]
pub struct BroadcastQuery {
    /// Broadcast this many random bytes made by the node instead of the request body, so a
    /// load generator does not carry every payload over the loopback it is measuring.
    pub fill: Option<usize>,
}

async fn broadcast(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<BroadcastQuery>,
    body: Bytes,
) -> Response {
    let payload = match q.fill {
        None => body,
        Some(_) if !body.is_empty() => {
            return (StatusCode::BAD_REQUEST, "`fill` takes no body").into_response();
        }
        Some(n) if n > s.max_payload => {
            return (
                StatusCode::BAD_REQUEST,
                format!("fill {n} exceeds the payload limit {}", s.max_payload),
            )
                .into_response();
        }
        Some(n) => {
            let mut v = vec![0u8; n];
            rand::Rng::fill(&mut rand::thread_rng(), &mut v[..]);
            Bytes::from(v)
        }
    };
    match s.node.broadcast(payload).await {
        Ok(id) => Json(serde_json::json!({
            "origin": id.origin.to_hex(),
            "nonce": id.nonce,
        }))
        .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn deliveries(
    State(s): State<Arc<AdminState>>,
    Query(cursor): Query<Cursor>,
) -> Json<Vec<DeliveryRecord>> {
    let log = s.log.lock().unwrap_or_else(|p| p.into_inner());
    Json(log.after(cursor.after))
}

/// A long poll, so a harness learns when a node has delivered everything with one request
/// instead of polling the delivery log while it measures loopback traffic.
async fn deliveries_wait(
    State(s): State<Arc<AdminState>>,
    Query(w): Query<WaitFor>,
) -> Json<serde_json::Value> {
    let mut rx = s.last_seq.subscribe();
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(w.timeout_ms),
        rx.wait_for(|&seq| seq >= w.seq),
    )
    .await;
    let last_seq = *rx.borrow();
    Json(serde_json::json!({ "last_seq": last_seq }))
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
    fn cursor_returns_each_record_once_in_order() {
        let mut log = DeliveryLog::default();
        for t in 0..5 {
            log.push(DeliveryRecord::new(&delivery(1), 10 + t));
        }
        let first: Vec<u64> = log.after(0).iter().map(|r| r.seq).collect();
        assert_eq!(first, [1, 2, 3, 4, 5]);
        let rest: Vec<u64> = log.after(3).iter().map(|r| r.seq).collect();
        assert_eq!(rest, [4, 5]);
        assert!(log.after(5).is_empty());
        assert!(log.after(u64::MAX).is_empty());
    }

    #[test]
    fn cursor_survives_the_log_forgetting_old_records() {
        let mut log = DeliveryLog::default();
        for t in 0..(DELIVERY_LOG as u64 + 3) {
            log.push(DeliveryRecord::new(&delivery(1), t));
        }
        // Records 1..=3 are gone; asking from before them starts at the oldest kept.
        assert_eq!(log.after(0)[0].seq, 4);
        assert_eq!(log.after(0).len(), PAGE.min(DELIVERY_LOG));
        let tail = log.after(DELIVERY_LOG as u64 + 1);
        assert_eq!(
            tail.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [DELIVERY_LOG as u64 + 2, DELIVERY_LOG as u64 + 3]
        );
    }

    #[test]
    fn transport_totals_sum_labels() {
        let text = "# TYPE raintree_transport_bytes_sent counter\n\
            raintree_transport_bytes_sent_total{kind=\"gossip\"} 100\n\
            raintree_transport_bytes_sent_total{kind=\"ack\"} 20\n\
            raintree_transport_open_connections{direction=\"inbound\"} 2\n\
            raintree_transport_open_connections{direction=\"outbound\"} 3\n# EOF\n";
        let t = TransportTotals::from_metrics_text(text);
        assert_eq!(t.bytes_sent, 120);
        assert_eq!(t.open_connections, 5);
        assert_eq!(t.bytes_received, 0);
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
