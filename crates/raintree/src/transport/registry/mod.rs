//! The registry: the one owner of the pool's state. It keeps every peer's state (its queue,
//! its current connection, dial bookkeeping and pending requests) and the connection counts,
//! and makes a fresh connection serve its peer. Each way into the pool has its own file:
//! queueing a message, dialling, accepting, requests, bans and shutdown.

mod accept;
mod bans;
mod dial;
mod requests;
mod send;
mod shutdown;

pub use shutdown::ShutdownReport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use raintree_proto::wire::Message;
use raintree_proto::Address;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::conn::{self, ConnRef, PoolLink, Shared};
use super::events::{CloseReason, Emitter, EventBudget, Events, Responder, ResponseSink};
use super::framing::max_frame_len;
use super::handshake::{self, LocalKeys};
use super::metrics::TransportMetrics;
use super::queue::{Budget, PeerQueue};
use super::ratelimit::Limiter;
use super::score::{Offence, Scores};
use super::tiebreak;
use super::{lock, Identity, RequestError, TransportConfig, TransportError};
use crate::net::{ReadHalf, WriteHalf};

/// A request's waiter.
type Pending = oneshot::Sender<Result<Bytes, RequestError>>;

/// A peer's queue and connection state; outlives its connections.
pub(crate) struct Peer {
    address: Address,
    q: Mutex<PeerState>,
}

struct PeerState {
    queue: PeerQueue,
    current: Option<ConnRef>,
    /// Connections open to this peer (the current one and any closing ones).
    conns: usize,
    dialing: bool,
    failures: u32,
    next_dial: Option<Instant>,
    pending: HashMap<u64, Pending>,
}

impl PeerState {
    fn fail_pending(&mut self, err: RequestError) {
        for (_, tx) in self.pending.drain() {
            let _ = tx.send(Err(err.clone()));
        }
    }

    /// Drops every queued message, counting each under `why`, and fails the waiting
    /// requests: nothing will carry them.
    fn abandon(&mut self, metrics: &TransportMetrics, why: &'static str, err: RequestError) {
        for _ in 0..self.queue.clear() {
            metrics.drop_msg(why);
        }
        self.fail_pending(err);
    }
}

impl Peer {
    fn new(address: Address, queue_bytes: usize, budget: Arc<Budget>) -> Self {
        Self {
            address,
            q: Mutex::new(PeerState {
                queue: PeerQueue::new(queue_bytes, budget),
                current: None,
                conns: 0,
                dialing: false,
                failures: 0,
                next_dial: None,
                pending: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PeerState> {
        lock(&self.q)
    }
}

#[derive(Default)]
struct State {
    peers: HashMap<Address, Arc<Peer>>,
    inbound: usize,
    outbound: usize,
    shutting_down: bool,
}

/// Everything the transport's tasks share.
pub(crate) struct Inner {
    address: Address,
    local_addr: SocketAddr,
    keys: LocalKeys,
    /// The settings; `config.peers` is the owner's peer book, read here, never copied.
    config: TransportConfig,
    /// What connections see: metrics, events, cancellation, settings.
    shared: Arc<Shared>,
    state: Mutex<State>,
    /// Bytes queued across every peer, against `total_queue_bytes`.
    budget: Arc<Budget>,
    /// Misbehaviour scores and bans, by peer.
    scores: Mutex<Scores>,
    /// Set on the first ban: until then the per-message ban check takes no lock.
    any_ban: AtomicBool,
    /// Handshake token buckets, by remote IP.
    limiter: Mutex<Limiter>,
    next_conn: AtomicU64,
    next_request: AtomicU64,
}

/// Releases a connection slot when dropped, whatever path the task took.
struct Slot {
    inner: Arc<Inner>,
    inbound: bool,
}

impl Slot {
    /// Takes an inbound slot, or returns `None` at `max_inbound`.
    fn inbound(inner: &Arc<Inner>) -> Option<Slot> {
        let mut st = lock(&inner.state);
        if st.inbound >= inner.config.max_inbound {
            return None;
        }
        st.inbound += 1;
        Some(Slot {
            inner: Arc::clone(inner),
            inbound: true,
        })
    }

    /// An outbound slot already counted under the state lock.
    fn counted_outbound(inner: &Arc<Inner>) -> Slot {
        Slot {
            inner: Arc::clone(inner),
            inbound: false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = lock(&self.inner.state);
        if self.inbound {
            st.inbound = st.inbound.saturating_sub(1);
        } else {
            st.outbound = st.outbound.saturating_sub(1);
        }
    }
}

impl Inner {
    /// Binds the listener and starts the pool on it (`config` already checked).
    pub(crate) async fn start(
        identity: Identity,
        config: TransportConfig,
        metrics: TransportMetrics,
    ) -> Result<(Arc<Inner>, Events), TransportError> {
        let listener = accept::bind(config.net, config.listen).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let keys = LocalKeys::generate(&identity)?;
        let (tx, rx) = mpsc::channel(config.event_capacity);
        let budget = EventBudget::new(config.event_bytes);
        let shared = Arc::new(Shared {
            metrics,
            events: Emitter::new(tx, Arc::clone(&budget)),
            kill: Default::default(),
            tracker: TaskTracker::new(),
            lost: AtomicU64::new(0),
            epoch: Instant::now(),
            max_payload: config.max_payload,
            max_frame: max_frame_len(config.max_payload),
            batch_bytes: config.batch_bytes,
            idle_timeout: config.idle_timeout,
            linger: config.linger,
        });
        let inner = Arc::new(Inner {
            address: identity.address(),
            local_addr,
            keys,
            shared,
            state: Mutex::new(State::default()),
            budget: Budget::new(config.total_queue_bytes),
            scores: Mutex::new(Scores::new(config.score)),
            any_ban: AtomicBool::new(false),
            limiter: Mutex::new(Limiter::new(config.handshake_limit)),
            next_conn: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            config,
        });
        inner
            .shared
            .tracker
            .spawn(Arc::clone(&inner).accept_loop(listener));
        Ok((inner, Events { rx, budget }))
    }

    /// This node's identity address.
    pub(crate) fn address(&self) -> Address {
        self.address
    }

    /// The address the listener is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn metrics(&self) -> &TransportMetrics {
        &self.shared.metrics
    }

    /// Payload bytes of events not yet read by the application.
    pub(crate) fn event_bytes_in_flight(&self) -> usize {
        self.shared.events.budget.in_flight()
    }

    /// Bytes queued across every peer.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.budget.used()
    }

    /// True once shutdown has begun.
    fn is_closing(&self) -> bool {
        self.shared.events.is_closing()
    }

    /// The outcome of requests whose connection went away.
    fn closed_error(&self) -> RequestError {
        if self.shared.events.closing.is_cancelled() {
            RequestError::Shutdown
        } else {
            RequestError::ConnectionClosed
        }
    }

    /// Where `peer` listens, if the peer book knows it (never for ourselves, whom the
    /// owner's book may list).
    fn listen_addr(&self, peer: &Address) -> Option<SocketAddr> {
        if *peer == self.address {
            return None;
        }
        self.config.peers.get(peer)
    }

    /// The peer `address`, created if absent (the caller checked the peer book or `open`).
    fn peer_entry(&self, st: &mut State, address: Address) -> Arc<Peer> {
        Arc::clone(st.peers.entry(address).or_insert_with(|| {
            Arc::new(Peer::new(
                address,
                self.config.queue_bytes,
                Arc::clone(&self.budget),
            ))
        }))
    }

    /// Replaces the peer book's entries and closes the connections of peers it dropped.
    pub(crate) fn set_peers(&self, peers: HashMap<Address, SocketAddr>) {
        let old = self.config.peers.replace(peers);
        self.peers_removed(old.into_keys());
    }

    /// Forgets the peers in `removed` that the peer book no longer lists: their queues are
    /// dropped, their requests failed and their connections closed. Peers the book still
    /// lists (added back meanwhile) and strangers an open transport serves are left alone.
    pub(crate) fn peers_removed(&self, removed: impl IntoIterator<Item = Address>) {
        let mut st = lock(&self.state);
        for a in removed {
            if self.config.peers.contains(&a) {
                continue;
            }
            let Some(p) = st.peers.remove(&a) else {
                continue;
            };
            let mut q = p.lock();
            q.abandon(
                self.metrics(),
                "peer_removed",
                RequestError::ConnectionClosed,
            );
            if let Some(c) = q.current.take() {
                c.close_with(CloseReason::PeerRemoved);
            }
        }
    }

    /// Makes a fresh connection serve `peer`, resolving simultaneous dials with
    /// [`tiebreak::new_wins`]. The loser sends Goodbye and still reads until the other side
    /// closes, so nothing in flight is lost; the queue stays with the peer and moves to the
    /// winner.
    async fn register(
        self: Arc<Self>,
        peer: Arc<Peer>,
        est: handshake::Established,
        reader: handshake::NoiseReader<ReadHalf>,
        writer: WriteHalf,
        inbound: bool,
        slot: Slot,
    ) {
        if self.is_banned(&peer.address) {
            // Banned while this handshake ran: the socket closes here, unused.
            if !inbound {
                peer.lock().dialing = false;
            }
            tracing::debug!(peer = %peer.address, inbound, "connection to a banned peer dropped");
            return;
        }
        let dialer = if inbound { est.remote } else { self.address };
        let conn = ConnRef::new(
            self.next_conn.fetch_add(1, Ordering::Relaxed),
            dialer,
            &self.shared.kill,
        );
        let still_known = lock(&self.state).peers.contains_key(&peer.address);
        {
            let mut q = peer.lock();
            if !inbound {
                q.dialing = false;
                q.failures = 0;
                q.next_dial = None;
            }
            q.conns += 1;
            let wins = tiebreak::new_wins(q.current.as_ref().map(|c| c.dialer), conn.dialer);
            if !still_known {
                conn.close_with(CloseReason::PeerRemoved);
            } else if wins {
                if let Some(old) = q.current.replace(conn.clone()) {
                    tracing::debug!(peer = %peer.address, "replacing connection");
                    old.close_with(CloseReason::Replaced);
                }
            } else {
                tracing::debug!(peer = %peer.address, "duplicate connection loses the tie-break");
                conn.close_with(CloseReason::Duplicate);
            }
            if self.shared.events.closing.is_cancelled() {
                // Shutdown: this connection only drains what is queued, then says Goodbye.
                conn.close_with(CloseReason::Shutdown);
            }
        }
        let shared = Arc::clone(&self.shared);
        let link = Arc::new(PeerLink { inner: self, peer });
        conn::run(
            shared, link, conn, est.cipher, reader, writer, inbound, slot,
        )
        .await;
    }

    /// Called when connection `conn` of `peer` stops serving it; returns true if it was the
    /// current one.
    fn detach(&self, peer: &Peer, conn: u64) -> bool {
        let mut q = peer.lock();
        if q.current.as_ref().map(|c| c.id) != Some(conn) {
            return false;
        }
        q.current = None;
        true
    }

    /// A connection of `peer` has ended: fail waiters if nothing else serves the peer and
    /// redial if messages are waiting.
    fn conn_ended(self: &Arc<Self>, peer: &Arc<Peer>, conn: u64) {
        self.detach(peer, conn);
        let mut st = lock(&self.state);
        let mut q = peer.lock();
        q.conns = q.conns.saturating_sub(1);
        if q.current.is_some() || q.conns > 0 {
            return;
        }
        q.fail_pending(self.closed_error());
        let waiting = q.queue.len() > 0;
        if waiting
            && !q.dialing
            && !self.shared.kill.is_cancelled()
            && !self.is_banned(&peer.address)
        {
            if let Ok(dial) = self.claim_dial(&mut st, &mut q, peer.address) {
                drop(q);
                drop(st);
                return self.start_dial(Arc::clone(peer), dial);
            }
        }
        if !waiting && !q.dialing && self.listen_addr(&peer.address).is_none() {
            // An open-mode peer with nothing left: forget it so the map stays bounded.
            drop(q);
            if st
                .peers
                .get(&peer.address)
                .is_some_and(|p| Arc::ptr_eq(p, peer))
            {
                st.peers.remove(&peer.address);
            }
        }
    }
}

/// Queues responses through the registry (`enqueue` may spawn a dial, which needs the Arc).
struct Respond(Arc<Inner>);

impl ResponseSink for Respond {
    fn queue_response(&self, peer: Address, msg: Message) {
        if let Err(e) = self.0.enqueue(peer, msg, |_| {}) {
            tracing::debug!(%peer, error = %e, "response dropped");
        }
    }
}

/// One connection's view of the pool: its peer, through [`PoolLink`].
struct PeerLink {
    inner: Arc<Inner>,
    peer: Arc<Peer>,
}

impl PoolLink for PeerLink {
    fn peer(&self) -> Address {
        self.peer.address
    }

    fn take(&self, conn: u64, budget: usize, out: &mut Vec<Message>) -> bool {
        let mut q = self.peer.lock();
        if q.current.as_ref().map(|c| c.id) != Some(conn) {
            return false;
        }
        q.queue.take(budget, out);
        true
    }

    fn complete(&self, id: u64, payload: Bytes) -> bool {
        match self.peer.lock().pending.remove(&id) {
            Some(tx) => tx.send(Ok(payload)).is_ok(),
            None => false,
        }
    }

    fn responder(&self, id: u64) -> Responder {
        Responder::new(
            Arc::new(Respond(Arc::clone(&self.inner))),
            self.peer.address,
            id,
        )
    }

    fn detach(&self, conn: u64) {
        self.inner.detach(&self.peer, conn);
    }

    fn ended(&self, conn: u64) {
        self.inner.conn_ended(&self.peer, conn);
    }

    fn penalise(&self, offence: Offence) {
        self.inner.penalise(self.peer.address, offence);
    }
}
