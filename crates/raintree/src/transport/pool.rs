//! The pool: peer states with their queues, the listener, dialling, connection registration
//! with the simultaneous-dial tie-break, requests and shutdown.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use raintree_proto::wire::Message;
use raintree_proto::Address;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::framing::max_frame_len;
use super::handshake::{self, HandshakeError, LocalKeys};
use super::metrics::TransportMetrics;
use super::{
    conn, Event, Identity, RefuseReason, RequestError, SendError, TransportConfig, TransportError,
};

/// Queue accounting per message beyond its payload, so empty messages still cost something.
const MESSAGE_OVERHEAD: usize = 64;

/// What a shutdown achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every queue was sent before the deadline.
    pub drained: bool,
    /// Messages dropped: still queued at the deadline, or cut off mid-write when it passed.
    pub dropped: usize,
    /// Connections open when shutdown began.
    pub connections: usize,
    /// Tasks had to be aborted at the deadline.
    pub forced: bool,
    /// How long shutdown took.
    pub elapsed: Duration,
}

type Pending = oneshot::Sender<Result<Bytes, RequestError>>;

/// The connection currently serving a peer, as seen by the pool.
#[derive(Clone)]
pub(crate) struct ConnRef {
    pub id: u64,
    /// Who dialled it: decides simultaneous-dial ties.
    pub dialer: Address,
    /// Wakes this connection's writer.
    pub wake: Arc<Notify>,
    /// Asks the writer to finish: drain if still current, then Goodbye.
    pub close: CancellationToken,
    /// Why it was closed; the first reason given wins.
    pub why: Arc<std::sync::OnceLock<&'static str>>,
}

impl ConnRef {
    /// Closes this connection for `why` (sent in its Goodbye, reported in ConnectionDown).
    pub fn close_with(&self, why: &'static str) {
        let _ = self.why.set(why);
        self.close.cancel();
    }
}

/// A peer's queue and connection state; outlives its connections.
pub(crate) struct Peer {
    pub address: Address,
    pub q: Mutex<PeerQ>,
}

#[derive(Default)]
pub(crate) struct PeerQ {
    control: VecDeque<Message>,
    bulk: VecDeque<Message>,
    bytes: usize,
    pub current: Option<ConnRef>,
    /// Connections open to this peer (the current one and any closing ones).
    pub conns: usize,
    dialing: bool,
    failures: u32,
    next_dial: Option<Instant>,
    pending: HashMap<u64, Pending>,
}

impl PeerQ {
    fn len(&self) -> usize {
        self.control.len() + self.bulk.len()
    }

    fn clear(&mut self) -> usize {
        let n = self.len();
        self.control.clear();
        self.bulk.clear();
        self.bytes = 0;
        n
    }

    fn fail_pending(&mut self, err: RequestError) {
        for (_, tx) in self.pending.drain() {
            let _ = tx.send(Err(err.clone()));
        }
    }
}

fn cost(msg: &Message) -> usize {
    msg.payload().map_or(0, |p| p.len()) + MESSAGE_OVERHEAD
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the transport: the data stays consistent per step.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Peer {
    pub(crate) fn lock(&self) -> MutexGuard<'_, PeerQ> {
        lock(&self.q)
    }

    /// Takes up to `budget` bytes of messages (control first) for connection `conn`;
    /// `None` when `conn` no longer serves this peer.
    pub(crate) fn take(&self, conn: u64, budget: usize, out: &mut Vec<Message>) -> Option<()> {
        let mut q = self.lock();
        if q.current.as_ref().map(|c| c.id) != Some(conn) {
            return None;
        }
        let mut taken = 0;
        while let Some(m) = q.control.pop_front() {
            taken += cost(&m);
            out.push(m);
        }
        while taken < budget {
            let Some(m) = q.bulk.pop_front() else { break };
            taken += cost(&m);
            out.push(m);
        }
        q.bytes = q.bytes.saturating_sub(taken);
        Some(())
    }

    /// Completes the pending request `id`; false if nobody waits for it.
    pub(crate) fn complete(&self, id: u64, payload: Bytes) -> bool {
        match self.lock().pending.remove(&id) {
            Some(tx) => tx.send(Ok(payload)).is_ok(),
            None => false,
        }
    }
}

#[derive(Default)]
struct State {
    book: HashMap<Address, SocketAddr>,
    peers: HashMap<Address, Arc<Peer>>,
    inbound: usize,
    outbound: usize,
    shutting_down: bool,
}

/// Everything the transport's tasks share.
pub(crate) struct Inner {
    pub address: Address,
    pub local_addr: SocketAddr,
    pub keys: LocalKeys,
    pub config: TransportConfig,
    pub metrics: TransportMetrics,
    pub max_frame: usize,
    /// Taken away at the end of shutdown so the application's stream ends.
    events: Mutex<Option<mpsc::Sender<Event>>>,
    state: Mutex<State>,
    /// Shutdown began: no new sends or connections; writers drain and say Goodbye.
    pub closing: CancellationToken,
    /// Mirrors `closing` for the per-message paths (a token check takes a lock).
    closed: std::sync::atomic::AtomicBool,
    /// Messages taken by a writer whose write failed or was aborted.
    pub lost: AtomicU64,
    /// Deadline passed: every task stops now.
    pub kill: CancellationToken,
    pub tracker: TaskTracker,
    next_conn: AtomicU64,
    next_request: AtomicU64,
    /// Instant the transport started, the origin of `conn::Activity` timestamps.
    pub epoch: Instant,
}

/// Releases a connection slot when dropped, whatever path the task took.
pub(crate) struct Slot {
    inner: Arc<Inner>,
    inbound: bool,
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
    pub(crate) async fn start(
        identity: Identity,
        config: TransportConfig,
        metrics: TransportMetrics,
    ) -> Result<(Arc<Inner>, mpsc::Receiver<Event>), TransportError> {
        if config.max_payload >= u32::MAX as usize / 2 {
            return Err(TransportError::Config(
                "max_payload must be below 2 GiB".into(),
            ));
        }
        if config.event_capacity == 0 {
            return Err(TransportError::Config("event_capacity must be > 0".into()));
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| TransportError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let keys = LocalKeys::generate(&identity)?;
        let (tx, rx) = mpsc::channel(config.event_capacity);
        let address = identity.address();
        let mut book = config.peers.clone();
        book.remove(&address);
        let inner = Arc::new(Inner {
            address,
            local_addr,
            keys,
            max_frame: max_frame_len(config.max_payload),
            config,
            metrics,
            events: Mutex::new(Some(tx)),
            state: Mutex::new(State {
                book,
                ..State::default()
            }),
            closing: CancellationToken::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            lost: AtomicU64::new(0),
            kill: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            epoch: Instant::now(),
        });
        inner
            .tracker
            .spawn(Arc::clone(&inner).accept_loop(listener));
        Ok((inner, rx))
    }

    /// True once shutdown has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// A handle on the event stream, `None` once shutdown has finished.
    pub(crate) fn sender(&self) -> Option<mpsc::Sender<Event>> {
        lock(&self.events).clone()
    }

    /// Hands an event to the application; during shutdown it never waits for a reader.
    pub(crate) async fn emit(&self, ev: Event) {
        let tx = self.sender();
        self.emit_via(&tx, ev).await;
    }

    /// Like [`Inner::emit`] with a sender the caller keeps, saving a lock per event.
    pub(crate) async fn emit_via(&self, tx: &Option<mpsc::Sender<Event>>, ev: Event) {
        let Some(tx) = tx else { return };
        // Fast path: room in the channel, so no select or waiter registration. It still
        // counts against the task's scheduling budget like a send would, so a busy reader
        // yields and the application's task gets to run.
        let ev = match tx.try_send(ev) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                tokio::task::consume_budget().await;
                return;
            }
            Err(mpsc::error::TrySendError::Full(ev)) => ev,
        };
        if self.is_closing() {
            return;
        }
        tokio::select! {
            _ = tx.send(ev) => {}
            _ = self.closing.cancelled() => {}
        }
    }

    /// Queues `msg` for `peer` and dials if no connection serves it; `register` runs under
    /// the peer's lock just before the push (requests record their waiter there).
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        peer: Address,
        msg: Message,
        register: impl FnOnce(&mut PeerQ),
    ) -> Result<(), SendError> {
        let r = self.try_enqueue(peer, msg, register);
        if let Err(e) = &r {
            self.metrics.drop_msg(match e {
                SendError::UnknownPeer(_) => "unknown_peer",
                SendError::QueueFull { .. } => "queue_full",
                SendError::PayloadTooLarge { .. } => "payload_too_large",
                SendError::OutboundLimit => "outbound_limit",
                SendError::Shutdown => "shutdown",
                SendError::Reserved(_) => "reserved",
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
                self.metrics.drop_msg("reserved");
                Err(SendError::Reserved(msg.kind()))
            }
            _ => self.enqueue(peer, msg, |_| {}),
        }
    }

    fn try_enqueue(
        self: &Arc<Self>,
        peer: Address,
        msg: Message,
        register: impl FnOnce(&mut PeerQ),
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
        let mut st = lock(&self.state);
        let dial_to = st.book.get(&peer).copied();
        let p = match st.peers.get(&peer) {
            Some(p) => Arc::clone(p),
            None if dial_to.is_some() => {
                let p = Arc::new(Peer {
                    address: peer,
                    q: Mutex::new(PeerQ::default()),
                });
                st.peers.insert(peer, Arc::clone(&p));
                p
            }
            None => return Err(SendError::UnknownPeer(peer)),
        };
        let mut q = p.lock();
        let size = cost(&msg);
        if q.bytes + size > self.config.queue_bytes {
            return Err(SendError::QueueFull {
                peer,
                queued: q.bytes,
                limit: self.config.queue_bytes,
            });
        }
        let mut dial = None;
        if q.current.is_none() && !q.dialing {
            let Some(addr) = dial_to else {
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
        q.bytes += size;
        if msg.is_control() {
            q.control.push_back(msg);
        } else {
            q.bulk.push_back(msg);
        }
        if let Some(c) = &q.current {
            c.wake.notify_one();
        }
        drop(q);
        if let Some((addr, not_before)) = dial {
            let slot = Slot {
                inner: Arc::clone(self),
                inbound: false,
            };
            self.tracker
                .spawn(Arc::clone(self).dial(p, addr, not_before, slot));
        }
        Ok(())
    }

    pub(crate) async fn request(
        self: &Arc<Self>,
        peer: Address,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, RequestError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let r = self.enqueue(peer, Message::Request { id, payload }, |q| {
            q.pending.insert(id, tx);
        });
        if let Err(e) = r {
            self.metrics.request_done("send_error");
            return Err(if e == SendError::Shutdown {
                RequestError::Shutdown
            } else {
                RequestError::Send(e)
            });
        }
        // Forgets the waiter however this future ends (timeout, cancellation).
        struct Forget<'a>(&'a Inner, Address, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                if let Some(p) = lock(&self.0.state).peers.get(&self.1) {
                    p.lock().pending.remove(&self.2);
                }
            }
        }
        let _forget = Forget(self, peer, id);
        let out = match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RequestError::ConnectionClosed),
            Err(_) => Err(RequestError::Timeout),
        };
        self.metrics.request_done(match &out {
            Ok(_) => "ok",
            Err(RequestError::Timeout) => "timeout",
            Err(RequestError::ConnectionClosed) => "connection_closed",
            Err(RequestError::Shutdown) => "shutdown",
            Err(RequestError::Send(_)) => "send_error",
        });
        out
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
            let n = q.clear();
            for _ in 0..n {
                self.metrics.drop_msg("peer_removed");
            }
            q.fail_pending(RequestError::ConnectionClosed);
            if let Some(c) = q.current.take() {
                c.close_with("peer removed");
            }
        }
    }

    /// Dials `addr` expecting `peer`'s identity, after the backoff if one is pending.
    async fn dial(
        self: Arc<Self>,
        peer: Arc<Peer>,
        addr: SocketAddr,
        not_before: Option<Instant>,
        slot: Slot,
    ) {
        if let Some(at) = not_before {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                // A shutdown does not wait out a backoff: the queued messages are dropped.
                _ = self.closing.cancelled() => return self.dial_failed(&peer, "shutdown"),
            }
        }
        let attempt = async {
            let sock = TcpStream::connect(addr).await?;
            let _ = sock.set_nodelay(true);
            let (r, mut w) = sock.into_split();
            let mut reader = handshake::noise_reader(r);
            let est = handshake::initiate(&self.keys, &mut reader, &mut w, peer.address).await?;
            Ok::<_, HandshakeError>((reader, w, est))
        };
        let res = tokio::select! {
            r = tokio::time::timeout(self.config.handshake_timeout, attempt) => {
                r.unwrap_or(Err(HandshakeError::Timeout))
            }
            _ = self.kill.cancelled() => return self.dial_failed(&peer, "shutdown"),
        };
        match res {
            Ok((reader, w, est)) => {
                self.register(peer, est, reader, w, false, slot).await;
            }
            Err(e) => {
                tracing::debug!(peer = %peer.address, %addr, error = %e, "dial failed");
                self.metrics.handshake_failed(e.label());
                self.dial_failed(&peer, e.label());
                let reason = format!("dial failed: {e}");
                self.emit(Event::ConnectionDown {
                    peer: peer.address,
                    reason,
                    lost: true,
                })
                .await;
            }
        }
    }

    /// The outcome of requests whose connection went away.
    fn closed_error(&self) -> RequestError {
        if self.closing.is_cancelled() {
            RequestError::Shutdown
        } else {
            RequestError::ConnectionClosed
        }
    }

    fn dial_failed(&self, peer: &Peer, why: &'static str) {
        let mut q = peer.lock();
        q.dialing = false;
        q.failures = q.failures.saturating_add(1);
        let backoff = self
            .config
            .dial_backoff
            .saturating_mul(1 << q.failures.min(16).saturating_sub(1))
            .min(self.config.max_dial_backoff);
        q.next_dial = Some(Instant::now() + backoff);
        if q.current.is_none() {
            // Nobody can carry them: a later send redials after the backoff.
            let n = q.clear();
            for _ in 0..n {
                self.metrics.drop_msg("dial_failed");
            }
            q.fail_pending(self.closed_error());
        }
        tracing::trace!(peer = %peer.address, why, "dial slot released");
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.closing.cancelled() => break,
                r = listener.accept() => r,
            };
            let (sock, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = self.closing.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                    }
                }
            };
            let admitted = {
                let mut st = lock(&self.state);
                if st.inbound >= self.config.max_inbound {
                    false
                } else {
                    st.inbound += 1;
                    true
                }
            };
            if !admitted {
                drop(sock);
                self.refused(remote, RefuseReason::InboundLimit);
                continue;
            }
            let slot = Slot {
                inner: Arc::clone(&self),
                inbound: true,
            };
            self.tracker
                .spawn(Arc::clone(&self).inbound(sock, remote, slot));
        }
    }

    fn refused(&self, remote: SocketAddr, reason: RefuseReason) {
        self.metrics.refuse(reason.label());
        tracing::debug!(%remote, ?reason, "inbound connection refused");
        // Never let a flood of refusals wait on the application.
        if let Some(tx) = self.sender() {
            let _ = tx.try_send(Event::Refused { remote, reason });
        }
    }

    async fn inbound(self: Arc<Self>, sock: TcpStream, remote: SocketAddr, slot: Slot) {
        let _ = sock.set_nodelay(true);
        let (r, mut w) = sock.into_split();
        let mut reader = handshake::noise_reader(r);
        let res = tokio::select! {
            r = tokio::time::timeout(
                self.config.handshake_timeout,
                handshake::respond(&self.keys, &mut reader, &mut w),
            ) => r.unwrap_or(Err(HandshakeError::Timeout)),
            // Shutdown stops accepting, half-done handshakes included.
            _ = self.closing.cancelled() => return,
        };
        let est = match res {
            Ok(est) => est,
            Err(e) => {
                self.metrics.handshake_failed(e.label());
                let reason = match e {
                    HandshakeError::Timeout => RefuseReason::HandshakeTimeout,
                    _ => RefuseReason::HandshakeFailed(e.label()),
                };
                tracing::debug!(%remote, error = %e, "inbound handshake failed");
                return self.refused(remote, reason);
            }
        };
        if est.remote == self.address {
            return self.refused(remote, RefuseReason::SelfConnection);
        }
        let peer = {
            let mut st = lock(&self.state);
            let known = st.book.contains_key(&est.remote);
            if !known && !self.config.open {
                None
            } else {
                Some(Arc::clone(st.peers.entry(est.remote).or_insert_with(
                    || {
                        Arc::new(Peer {
                            address: est.remote,
                            q: Mutex::new(PeerQ::default()),
                        })
                    },
                )))
            }
        };
        match peer {
            Some(p) => self.register(p, est, reader, w, true, slot).await,
            None => self.refused(remote, RefuseReason::UnknownPeer(est.remote)),
        }
    }

    /// Makes a fresh connection serve `peer`, resolving simultaneous dials: of two
    /// connections dialled by different sides, the one dialled by the lower address stays;
    /// of two dialled by the same side, the newer stays. Both sides decide alike. The loser
    /// sends Goodbye and still reads until the other side closes, so nothing in flight is
    /// lost; the queue stays with the peer and moves to the winner.
    async fn register(
        self: Arc<Self>,
        peer: Arc<Peer>,
        est: handshake::Established,
        reader: handshake::NoiseReader,
        writer: tokio::net::tcp::OwnedWriteHalf,
        inbound: bool,
        slot: Slot,
    ) {
        let conn = ConnRef {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            dialer: if inbound { est.remote } else { self.address },
            wake: Arc::new(Notify::new()),
            close: CancellationToken::new(),
            why: Default::default(),
        };
        let still_known = lock(&self.state).peers.contains_key(&peer.address);
        {
            let mut q = peer.lock();
            if !inbound {
                q.dialing = false;
                q.failures = 0;
                q.next_dial = None;
            }
            q.conns += 1;
            let wins = match &q.current {
                None => true,
                Some(cur) if cur.dialer == conn.dialer => true,
                Some(cur) => conn.dialer < cur.dialer,
            };
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
            if self.closing.is_cancelled() {
                // Shutdown: this connection only drains what is queued, then says Goodbye.
                conn.close_with("shutdown");
            }
        }
        conn::run(self, peer, conn, est.cipher, reader, writer, inbound, slot).await;
    }

    /// Called when connection `conn` of `peer` stops serving it; returns true if it was the
    /// current one.
    pub(crate) fn detach(self: &Arc<Self>, peer: &Arc<Peer>, conn: u64) -> bool {
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
        let waiting = q.len() > 0;
        let addr = st.book.get(&peer.address).copied();
        if waiting && !q.dialing && !self.kill.is_cancelled() {
            if let Some(addr) = addr.filter(|_| st.outbound < self.config.max_outbound) {
                st.outbound += 1;
                q.dialing = true;
                let not_before = q.next_dial;
                drop(q);
                drop(st);
                let slot = Slot {
                    inner: Arc::clone(self),
                    inbound: false,
                };
                self.tracker
                    .spawn(Arc::clone(self).dial(Arc::clone(peer), addr, not_before, slot));
                return;
            }
        }
        if addr.is_none() && !waiting && q.dialing.eq(&false) {
            // An open-mode peer with nothing left: forget it so the map stays bounded.
            drop(q);
            if let Some(p) = st.peers.get(&peer.address) {
                if Arc::ptr_eq(p, peer) {
                    st.peers.remove(&peer.address);
                }
            }
        }
    }

    pub(crate) async fn shutdown(self: &Arc<Self>, deadline: Duration) -> ShutdownReport {
        let start = Instant::now();
        let first = {
            let mut st = lock(&self.state);
            let first = !st.shutting_down;
            st.shutting_down = true;
            first
        };
        if !first {
            self.tracker.wait().await;
            return ShutdownReport {
                drained: true,
                ..ShutdownReport::default()
            };
        }
        self.closed.store(true, Ordering::SeqCst);
        let lost_before = self.lost.load(Ordering::SeqCst);
        self.closing.cancel();
        let mut connections = 0;
        for p in lock(&self.state).peers.values() {
            let q = p.lock();
            connections += q.conns;
            if let Some(c) = &q.current {
                c.close_with("shutdown");
            }
        }
        self.tracker.close();
        let forced = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err();
        if forced {
            self.kill.cancel();
            self.tracker.wait().await;
        }
        let mut dropped = 0;
        for p in lock(&self.state).peers.values() {
            let mut q = p.lock();
            dropped += q.clear();
            q.fail_pending(RequestError::Shutdown);
        }
        for _ in 0..dropped {
            self.metrics.drop_msg("shutdown");
        }
        dropped += (self.lost.load(Ordering::SeqCst) - lost_before) as usize;
        // Every task has ended, so this was the last sender: the event stream ends.
        lock(&self.events).take();
        ShutdownReport {
            drained: dropped == 0 && !forced,
            dropped,
            connections,
            forced,
            elapsed: start.elapsed(),
        }
    }
}
