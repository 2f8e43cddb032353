//! The registry: every peer's state (its queue, its current connection, dial bookkeeping and
//! pending requests), the connection counts, queueing a message, and making a fresh
//! connection serve its peer.

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
use super::events::{Emitter, Event, EventBudget, Responder, ResponseSink};
use super::framing::max_frame_len;
use super::handshake::{self, LocalKeys};
use super::metrics::TransportMetrics;
use super::queue::{Budget, Full, PeerQueue};
use super::ratelimit::Limiter;
use super::score::{Offence, Scores, Verdict};
use super::tiebreak;
use super::{lock, Identity, RequestError, SendError, TransportConfig, TransportError};
use crate::net::{Listener, ReadHalf, WriteHalf};

/// A request's waiter.
pub(crate) type Pending = oneshot::Sender<Result<Bytes, RequestError>>;

/// A peer's queue and connection state; outlives its connections.
pub(crate) struct Peer {
    pub address: Address,
    q: Mutex<PeerState>,
}

pub(crate) struct PeerState {
    pub queue: PeerQueue,
    pub current: Option<ConnRef>,
    /// Connections open to this peer (the current one and any closing ones).
    pub conns: usize,
    pub dialing: bool,
    pub failures: u32,
    pub next_dial: Option<Instant>,
    pub pending: HashMap<u64, Pending>,
}

impl PeerState {
    pub fn fail_pending(&mut self, err: RequestError) {
        for (_, tx) in self.pending.drain() {
            let _ = tx.send(Err(err.clone()));
        }
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, PeerState> {
        lock(&self.q)
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub book: HashMap<Address, SocketAddr>,
    pub peers: HashMap<Address, Arc<Peer>>,
    pub inbound: usize,
    pub outbound: usize,
    pub shutting_down: bool,
}

/// Everything the transport's tasks share.
pub(crate) struct Inner {
    pub address: Address,
    pub local_addr: SocketAddr,
    pub keys: LocalKeys,
    pub config: TransportConfig,
    /// What connections see: metrics, events, cancellation, settings.
    pub shared: Arc<Shared>,
    pub state: Mutex<State>,
    /// Bytes queued across every peer, against `total_queue_bytes`.
    pub budget: Arc<Budget>,
    /// Misbehaviour scores and bans, by peer.
    pub scores: Mutex<Scores>,
    /// Set on the first ban: until then the per-message ban check takes no lock.
    any_ban: AtomicBool,
    /// Handshake token buckets, by remote IP.
    pub limiter: Mutex<Limiter>,
    next_conn: AtomicU64,
    pub next_request: AtomicU64,
}

/// Releases a connection slot when dropped, whatever path the task took.
pub(crate) struct Slot {
    inner: Arc<Inner>,
    inbound: bool,
}

impl Slot {
    /// Takes an inbound slot, or returns `None` at `max_inbound`.
    pub fn inbound(inner: &Arc<Inner>) -> Option<Slot> {
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
    pub fn counted_outbound(inner: &Arc<Inner>) -> Slot {
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
    /// Starts the pool on a bound listener (`config` already checked).
    pub(crate) fn start(
        listener: Listener,
        identity: Identity,
        config: TransportConfig,
        metrics: TransportMetrics,
    ) -> Result<(Arc<Inner>, mpsc::Receiver<Event>), TransportError> {
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let keys = LocalKeys::generate(&identity)?;
        let score_config = config.score;
        let total_queue_bytes = config.total_queue_bytes;
        let handshake_limit = config.handshake_limit;
        let (tx, rx) = mpsc::channel(config.event_capacity);
        let address = identity.address();
        let mut book = config.peers.clone();
        book.remove(&address);
        let shared = Arc::new(Shared {
            metrics,
            events: Emitter::new(tx, EventBudget::new(config.event_bytes)),
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
            address,
            local_addr,
            keys,
            config,
            shared,
            state: Mutex::new(State {
                book,
                ..State::default()
            }),
            budget: Budget::new(total_queue_bytes),
            scores: Mutex::new(Scores::new(score_config)),
            any_ban: AtomicBool::new(false),
            limiter: Mutex::new(Limiter::new(handshake_limit)),
            next_conn: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
        });
        inner
            .shared
            .tracker
            .spawn(Arc::clone(&inner).accept_loop(listener));
        Ok((inner, rx))
    }

    pub(crate) fn metrics(&self) -> &TransportMetrics {
        &self.shared.metrics
    }

    /// True once shutdown has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.shared.events.is_closing()
    }

    /// The peer `address`, created if absent (the caller checked the peer book or `open`).
    pub(crate) fn peer_entry(&self, st: &mut State, address: Address) -> Arc<Peer> {
        Arc::clone(st.peers.entry(address).or_insert_with(|| {
            Arc::new(Peer::new(
                address,
                self.config.queue_bytes,
                Arc::clone(&self.budget),
            ))
        }))
    }

    /// Queues `msg` for `peer` and dials if no connection serves it; `register` runs under
    /// the peer's lock just before the push (requests record their waiter there).
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        peer: Address,
        msg: Message,
        register: impl FnOnce(&mut PeerState),
    ) -> Result<(), SendError> {
        let r = self.try_enqueue(peer, msg, register);
        if let Err(e) = &r {
            self.metrics().drop_msg(match e {
                SendError::UnknownPeer(_) => "unknown_peer",
                SendError::QueueFull { .. } => "queue_full",
                SendError::TotalQueueFull { .. } => "total_queue_full",
                SendError::PayloadTooLarge { .. } => "payload_too_large",
                SendError::OutboundLimit => "outbound_limit",
                SendError::Shutdown => "shutdown",
                SendError::Reserved(_) => "reserved",
                SendError::Banned(_) => "banned",
            });
        }
        r
    }

    /// Queues a message handed in by the application. A forged Goodbye would close the peer's
    /// side and a stray Request or Response would confuse its correlation table, so those kinds
    /// are refused (and counted) here; only the transport's own paths send them.
    pub(crate) fn enqueue_app(
        self: &Arc<Self>,
        peer: Address,
        msg: Message,
    ) -> Result<(), SendError> {
        match msg {
            Message::Request { .. } | Message::Response { .. } | Message::Goodbye { .. } => {
                self.metrics().drop_msg("reserved");
                Err(SendError::Reserved(msg.kind()))
            }
            _ => self.enqueue(peer, msg, |_| {}),
        }
    }

    fn try_enqueue(
        self: &Arc<Self>,
        peer: Address,
        msg: Message,
        register: impl FnOnce(&mut PeerState),
    ) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Shutdown);
        }
        if let Some(p) = msg.payload() {
            if p.len() > self.config.max_payload {
                return Err(SendError::PayloadTooLarge {
                    len: p.len(),
                    max: self.config.max_payload,
                });
            }
        }
        if self.is_banned(&peer) {
            return Err(SendError::Banned(peer));
        }
        let mut st = lock(&self.state);
        // The peer book is consulted only for a peer not yet seen or not connected, so a send
        // on a live connection hashes the address once.
        let p = match st.peers.get(&peer) {
            Some(p) => Arc::clone(p),
            None if st.book.contains_key(&peer) => self.peer_entry(&mut st, peer),
            None => return Err(SendError::UnknownPeer(peer)),
        };
        let mut q = p.lock();
        let full = |f: Full| match f {
            Full::Peer { queued } => SendError::QueueFull {
                peer,
                queued,
                limit: self.config.queue_bytes,
            },
            Full::Total { used, limit } => SendError::TotalQueueFull { used, limit },
        };
        // Released by every early return below; the queue takes it over on push.
        let reserved = q.queue.check(&msg).map_err(full)?;
        let mut dial = None;
        if q.current.is_none() && !q.dialing {
            let Some(addr) = st.book.get(&peer).copied() else {
                return Err(SendError::UnknownPeer(peer));
            };
            if st.outbound >= self.config.max_outbound {
                return Err(SendError::OutboundLimit);
            }
            st.outbound += 1;
            q.dialing = true;
            dial = Some((addr, q.next_dial));
        }
        drop(st);
        register(&mut q);
        // A writer with messages waiting was woken for the first of them and takes again until
        // the queue is empty, so only a push onto an empty queue needs to wake it.
        let was_empty = q.queue.len() == 0;
        q.queue.push(msg, reserved).map_err(full)?;
        if let (true, Some(c)) = (was_empty, &q.current) {
            c.wake.notify_one();
        }
        drop(q);
        if let Some((addr, not_before)) = dial {
            let slot = Slot::counted_outbound(self);
            self.shared
                .tracker
                .spawn(Arc::clone(self).dial(p, addr, not_before, slot));
        }
        Ok(())
    }

    pub(crate) fn set_peers(self: &Arc<Self>, mut book: HashMap<Address, SocketAddr>) {
        book.remove(&self.address);
        let mut st = lock(&self.state);
        let removed: Vec<Address> = st
            .peers
            .keys()
            .filter(|a| !book.contains_key(a) && (st.book.contains_key(a) || !self.config.open))
            .copied()
            .collect();
        st.book = book;
        for a in removed {
            let Some(p) = st.peers.remove(&a) else {
                continue;
            };
            let mut q = p.lock();
            let n = q.queue.clear();
            for _ in 0..n {
                self.metrics().drop_msg("peer_removed");
            }
            q.fail_pending(RequestError::ConnectionClosed);
            if let Some(c) = q.current.take() {
                c.close_with("peer removed");
            }
        }
    }

    /// The outcome of requests whose connection went away.
    pub(crate) fn closed_error(&self) -> RequestError {
        if self.shared.events.closing.is_cancelled() {
            RequestError::Shutdown
        } else {
            RequestError::ConnectionClosed
        }
    }

    /// Makes a fresh connection serve `peer`, resolving simultaneous dials with
    /// [`tiebreak::new_wins`]. The loser sends Goodbye and still reads until the other side
    /// closes, so nothing in flight is lost; the queue stays with the peer and moves to the
    /// winner.
    pub(crate) async fn register(
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
                conn.close_with("peer removed");
            } else if wins {
                if let Some(old) = q.current.replace(conn.clone()) {
                    tracing::debug!(peer = %peer.address, "replacing connection");
                    old.close_with("replaced");
                }
            } else {
                tracing::debug!(peer = %peer.address, "duplicate connection loses the tie-break");
                conn.close_with("duplicate");
            }
            if self.shared.events.closing.is_cancelled() {
                // Shutdown: this connection only drains what is queued, then says Goodbye.
                conn.close_with("shutdown");
            }
        }
        let shared = Arc::clone(&self.shared);
        let link = Arc::new(PeerLink { inner: self, peer });
        conn::run(
            shared, link, conn, est.cipher, reader, writer, inbound, slot,
        )
        .await;
    }

    /// True while `peer` is banned.
    pub(crate) fn is_banned(&self, peer: &Address) -> bool {
        self.any_ban.load(Ordering::Acquire) && lock(&self.scores).is_banned(peer, Instant::now())
    }

    /// Scores `offence` against `peer`, banning it past the threshold.
    pub(crate) fn penalise(self: &Arc<Self>, peer: Address, offence: Offence) {
        let now = Instant::now();
        let banned = {
            let mut sc = lock(&self.scores);
            let v = sc.penalise(peer, offence, now);
            if v == Verdict::Banned {
                // Under the lock, so no send checks in between sees the ban missing.
                self.any_ban.store(true, Ordering::Release);
            }
            (v == Verdict::Banned).then(|| sc.banned(now))
        };
        self.metrics().penalty(offence.label());
        tracing::debug!(%peer, offence = offence.label(), "peer penalised");
        if let Some(banned) = banned {
            self.ban(peer, banned);
        }
    }

    /// Cuts a freshly banned peer off: its current connection is torn down without Goodbye
    /// (WIRE.md 5.1), its queue dropped and its requests failed.
    fn ban(self: &Arc<Self>, peer: Address, banned: usize) {
        let ban = self.config.score.ban_duration;
        tracing::warn!(%peer, ?ban, "peer banned for misbehaving");
        self.metrics().banned(banned);
        let p = lock(&self.state).peers.get(&peer).cloned();
        if let Some(p) = p {
            let mut q = p.lock();
            for _ in 0..q.queue.clear() {
                self.metrics().drop_msg("banned");
            }
            q.fail_pending(RequestError::ConnectionClosed);
            if let Some(c) = q.current.take() {
                c.abort_with(conn::BANNED);
            }
        }
        self.shared.events.try_emit(Event::Banned { peer, ban });
        // The gauge follows the ban's end even if nothing else happens by then.
        let inner = Arc::clone(self);
        let closing = self.shared.events.closing.clone();
        self.shared.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(ban) => {}
                _ = closing.cancelled() => return,
            }
            let n = lock(&inner.scores).banned(Instant::now());
            inner.metrics().set_banned(n);
        });
    }

    /// Called when connection `conn` of `peer` stops serving it; returns true if it was the
    /// current one.
    pub(crate) fn detach(&self, peer: &Peer, conn: u64) -> bool {
        let mut q = peer.lock();
        if q.current.as_ref().map(|c| c.id) != Some(conn) {
            return false;
        }
        q.current = None;
        true
    }

    /// A connection of `peer` has ended: fail waiters if nothing else serves the peer and
    /// redial if messages are waiting.
    pub(crate) fn conn_ended(self: &Arc<Self>, peer: &Arc<Peer>, conn: u64) {
        self.detach(peer, conn);
        let mut st = lock(&self.state);
        let mut q = peer.lock();
        q.conns = q.conns.saturating_sub(1);
        if q.current.is_some() || q.conns > 0 {
            return;
        }
        q.fail_pending(self.closed_error());
        let waiting = q.queue.len() > 0;
        let addr = st.book.get(&peer.address).copied();
        if waiting
            && !q.dialing
            && !self.shared.kill.is_cancelled()
            && !self.is_banned(&peer.address)
        {
            if let Some(addr) = addr.filter(|_| st.outbound < self.config.max_outbound) {
                st.outbound += 1;
                q.dialing = true;
                let not_before = q.next_dial;
                drop(q);
                drop(st);
                let slot = Slot::counted_outbound(self);
                self.shared.tracker.spawn(Arc::clone(self).dial(
                    Arc::clone(peer),
                    addr,
                    not_before,
                    slot,
                ));
                return;
            }
        }
        if addr.is_none() && !waiting && !q.dialing {
            // An open-mode peer with nothing left: forget it so the map stays bounded.
            drop(q);
            if let Some(p) = st.peers.get(&peer.address) {
                if Arc::ptr_eq(p, peer) {
                    st.peers.remove(&peer.address);
                }
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
