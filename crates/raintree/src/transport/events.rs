//! What the transport reports to its owner: the [`Event`] stream, the [`Responder`] that
//! answers a request, and the emitter every task writes events through.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raintree_proto::wire::Message;
use raintree_proto::Address;
use tokio::sync::{mpsc, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

use super::lock;

/// Why an inbound connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefuseReason {
    /// `max_inbound` connections were already open.
    InboundLimit,
    /// The remote IP opened connections faster than `handshake_limit` allows.
    RateLimited,
    /// The handshake did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// The handshake failed (the label says how).
    HandshakeFailed(&'static str),
    /// The peer proved an identity that is not in the peer list (and the node is not open).
    UnknownPeer(Address),
    /// The peer proved our own identity.
    SelfConnection,
    /// The peer proved an identity that is banned for misbehaving.
    Banned(Address),
}

impl RefuseReason {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RefuseReason::InboundLimit => "inbound_limit",
            RefuseReason::RateLimited => "rate_limited",
            RefuseReason::HandshakeTimeout => "handshake_timeout",
            RefuseReason::HandshakeFailed(_) => "handshake_failed",
            RefuseReason::UnknownPeer(_) => "unknown_peer",
            RefuseReason::SelfConnection => "self_connection",
            RefuseReason::Banned(_) => "banned",
        }
    }
}

/// Why a connection closed, as reported in [`Event::ConnectionDown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// No traffic either way for `idle_timeout`.
    Idle,
    /// It lost the simultaneous-dial tie-break to another connection to the same peer.
    Duplicate,
    /// A newer connection to the same peer took over.
    Replaced,
    /// The peer left the peer book.
    PeerRemoved,
    /// This transport is shutting down.
    Shutdown,
    /// The connection's reader ended; the writer says so in its Goodbye.
    Closed,
    /// A write to the socket failed.
    WriteFailed,
    /// The peer was banned for misbehaving.
    Banned,
    /// The peer said Goodbye, giving this reason.
    Goodbye(String),
    /// The peer closed without Goodbye.
    ClosedByPeer,
    /// After our Goodbye the peer did not close within `linger`.
    PeerDidNotClose,
    /// Torn down at once without Goodbye (the shutdown deadline passed).
    Aborted,
    /// The peer sent bytes no correct peer sends (the error says which).
    BadInput(String),
    /// Dialling the peer failed (the error says how).
    DialFailed(String),
}

impl CloseReason {
    /// The reasons a Goodbye can carry that say the peer lives on: a connection closed by
    /// an ordinary decision of the pool, not by the peer going away.
    const ORDINARY: [CloseReason; 4] = [
        CloseReason::Idle,
        CloseReason::Duplicate,
        CloseReason::Replaced,
        CloseReason::PeerRemoved,
    ];

    /// True when the peer is gone or failing (dial failed, reset, end of stream without
    /// Goodbye, bad input, a write failed, banned, or its Goodbye gives another reason than
    /// an ordinary one); false when the close was an ordinary decision (idle, duplicate or
    /// replaced connection, peer removed, our own shutdown), after which the peer is still
    /// reachable.
    pub fn peer_lost(&self) -> bool {
        match self {
            CloseReason::Goodbye(why) => !Self::ORDINARY.iter().any(|r| r.to_string() == *why),
            CloseReason::WriteFailed
            | CloseReason::Banned
            | CloseReason::ClosedByPeer
            | CloseReason::BadInput(_)
            | CloseReason::DialFailed(_) => true,
            CloseReason::Idle
            | CloseReason::Duplicate
            | CloseReason::Replaced
            | CloseReason::PeerRemoved
            | CloseReason::Shutdown
            | CloseReason::Closed
            | CloseReason::PeerDidNotClose
            | CloseReason::Aborted => false,
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The unit variants' texts travel in our Goodbyes, so peers parse them: keep them.
        f.write_str(match self {
            CloseReason::Idle => "idle",
            CloseReason::Duplicate => "duplicate",
            CloseReason::Replaced => "replaced",
            CloseReason::PeerRemoved => "peer removed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Closed => "closed",
            CloseReason::WriteFailed => "write failed",
            CloseReason::Banned => "banned",
            CloseReason::ClosedByPeer => "closed by peer",
            CloseReason::PeerDidNotClose => "peer did not close",
            CloseReason::Aborted => "aborted",
            CloseReason::Goodbye(why) => return write!(f, "goodbye: {why}"),
            CloseReason::BadInput(e) => return write!(f, "error: {e}"),
            CloseReason::DialFailed(e) => return write!(f, "dial failed: {e}"),
        })
    }
}

/// What the transport reports to its owner.
#[derive(Debug)]
pub enum Event {
    /// A message from a peer (every kind except Request, Response and Goodbye).
    Message {
        /// The sender.
        peer: Address,
        /// The message.
        message: Message,
    },
    /// A request from a peer; answer with `responder.respond(..)`.
    Request {
        /// The requester.
        peer: Address,
        /// The request body.
        payload: Bytes,
        /// Sends the one response.
        responder: Responder,
    },
    /// A connection to `peer` is established.
    ConnectionUp {
        /// The peer.
        peer: Address,
        /// True when the peer dialled us.
        inbound: bool,
    },
    /// A connection to `peer` closed.
    ConnectionDown {
        /// The peer.
        peer: Address,
        /// Why; [`CloseReason::peer_lost`] says whether the peer is still reachable.
        reason: CloseReason,
    },
    /// A peer's misbehaviour score crossed the threshold: its connection was closed and it is
    /// banned for `ban`.
    Banned {
        /// The peer.
        peer: Address,
        /// How long the ban lasts.
        ban: std::time::Duration,
    },
    /// An inbound connection was refused.
    Refused {
        /// The remote socket address.
        remote: SocketAddr,
        /// Why.
        reason: RefuseReason,
    },
}

/// The stream of [`Event`]s of one transport.
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
    pub(crate) budget: Arc<EventBudget>,
}

impl Events {
    /// The next event; `None` once the transport has shut down and every event was read.
    ///
    /// Cancel-safe: dropping the future loses no event.
    pub async fn recv(&mut self) -> Option<Event> {
        let ev = self.rx.recv().await;
        self.read(ev)
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event> {
        let ev = self.rx.try_recv().ok();
        self.read(ev)
    }

    /// Events waiting to be read.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn read(&self, ev: Option<Event>) -> Option<Event> {
        if let Some(ev) = &ev {
            // Once read, its bytes are the application's to bound.
            self.budget.release(self.budget.cost(ev));
        }
        ev
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // Nobody will read: readers waiting for budget must not wait forever.
        self.budget.sem.close();
    }
}

/// Payload bytes of `Message` and `Request` events in the channel and not yet read, against
/// `event_bytes`: a reader waits for room, as it waits for a slot in the channel.
pub(crate) struct EventBudget {
    sem: Semaphore,
    cap: usize,
}

impl EventBudget {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            sem: Semaphore::new(cap),
            cap,
        })
    }

    /// What `ev` costs: its payload, at most the whole budget (so any one event fits).
    pub fn cost(&self, ev: &Event) -> u32 {
        let n = match ev {
            Event::Message { message, .. } => message.payload().map_or(0, |p| p.len()),
            Event::Request { payload, .. } => payload.len(),
            _ => 0,
        };
        // `cap` fits in u32 (TransportConfig::check).
        n.min(self.cap) as u32
    }

    /// Takes `n` bytes, waiting for the application to read; false if it never will
    /// (stream dropped) or shutdown began while waiting.
    async fn acquire(&self, n: u32, closing: &CancellationToken) -> bool {
        if n == 0 {
            return true;
        }
        match self.sem.try_acquire_many(n) {
            Ok(p) => {
                p.forget();
                return true;
            }
            Err(TryAcquireError::Closed) => return false,
            Err(TryAcquireError::NoPermits) => {}
        }
        tokio::select! {
            r = self.sem.acquire_many(n) => match r {
                Ok(p) => {
                    p.forget();
                    true
                }
                Err(_) => false,
            },
            _ = closing.cancelled() => false,
        }
    }

    fn release(&self, n: u32) {
        if n > 0 {
            self.sem.add_permits(n as usize);
        }
    }

    /// Bytes of events waiting to be read, plus any a waiting reader already holds.
    pub fn in_flight(&self) -> usize {
        self.cap - self.sem.available_permits().min(self.cap)
    }
}

/// Where a [`Responder`] queues its response: the pool, seen through one method.
pub(crate) trait ResponseSink: Send + Sync {
    /// Queues `msg` for `peer`; a response that cannot be queued is dropped and counted.
    fn queue_response(&self, peer: Address, msg: Message);
}

/// Sends the response to one request. Dropping it sends nothing; the requester times out.
pub struct Responder {
    sink: Arc<dyn ResponseSink>,
    peer: Address,
    id: u64,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("peer", &self.peer)
            .field("id", &self.id)
            .finish()
    }
}

impl Responder {
    pub(crate) fn new(sink: Arc<dyn ResponseSink>, peer: Address, id: u64) -> Self {
        Self { sink, peer, id }
    }

    /// Queues the response; it is dropped (and counted) if it cannot be queued.
    pub fn respond(self, payload: Bytes) {
        let msg = Message::Response {
            id: self.id,
            payload,
        };
        self.sink.queue_response(self.peer, msg);
    }
}

/// The writing end of the event stream, shared by every task, and the shutdown signal that
/// tells them to stop waiting on a slow reader.
pub(crate) struct Emitter {
    /// Taken away at the end of shutdown so the application's stream ends.
    tx: Mutex<Option<mpsc::Sender<Event>>>,
    /// Shutdown began: no new sends or connections; writers drain and say Goodbye.
    pub closing: CancellationToken,
    /// Mirrors `closing` for the per-message paths (a token check takes a lock).
    closed: AtomicBool,
    /// Bytes of payload-carrying events not yet read.
    pub budget: Arc<EventBudget>,
}

impl Emitter {
    pub fn new(tx: mpsc::Sender<Event>, budget: Arc<EventBudget>) -> Self {
        Self {
            tx: Mutex::new(Some(tx)),
            closing: CancellationToken::new(),
            closed: AtomicBool::new(false),
            budget,
        }
    }

    /// True once shutdown has begun.
    pub fn is_closing(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Begins shutdown: emitting stops waiting for the reader.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.cancel();
    }

    /// Drops the last sender so the application's stream ends.
    pub fn finish(&self) {
        lock(&self.tx).take();
    }

    /// A handle on the event stream, `None` once shutdown has finished.
    pub fn sender(&self) -> Option<mpsc::Sender<Event>> {
        lock(&self.tx).clone()
    }

    /// Hands an event to the application; during shutdown it never waits for a reader.
    pub async fn emit(&self, ev: Event) {
        let tx = self.sender();
        self.emit_via(&tx, ev).await;
    }

    /// Hands a payload-carrying event to the application once its bytes fit the event
    /// budget; dropped if the application will never read it.
    pub async fn emit_payload(&self, tx: &Option<mpsc::Sender<Event>>, ev: Event) {
        let n = self.budget.cost(&ev);
        if !self.budget.acquire(n, &self.closing).await {
            return;
        }
        if !self.emit_via(tx, ev).await {
            self.budget.release(n);
        }
    }

    /// Like [`Emitter::emit`] with a sender the caller keeps, saving a lock per event; false
    /// if the event was dropped.
    pub async fn emit_via(&self, tx: &Option<mpsc::Sender<Event>>, ev: Event) -> bool {
        let Some(tx) = tx else { return false };
        // Fast path: room in the channel, so no select or waiter registration. It still
        // counts against the task's scheduling budget like a send would, so a busy reader
        // yields and the application's task gets to run.
        let ev = match tx.try_send(ev) {
            Ok(()) => {
                tokio::task::consume_budget().await;
                return true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tokio::task::consume_budget().await;
                return false;
            }
            Err(mpsc::error::TrySendError::Full(ev)) => ev,
        };
        if self.is_closing() {
            return false;
        }
        tokio::select! {
            r = tx.send(ev) => r.is_ok(),
            _ = self.closing.cancelled() => false,
        }
    }

    /// Reports a refused connection without ever waiting on the application.
    pub fn try_emit(&self, ev: Event) {
        if let Some(tx) = self.sender() {
            let _ = tx.try_send(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CloseReason;

    #[test]
    fn a_goodbye_for_an_ordinary_reason_of_ours_leaves_the_peer_reachable() {
        for ours in CloseReason::ORDINARY {
            assert!(!ours.peer_lost(), "{ours}");
            assert!(
                !CloseReason::Goodbye(ours.to_string()).peer_lost(),
                "{ours}"
            );
        }
        for lost in [
            CloseReason::Shutdown,
            CloseReason::Closed,
            CloseReason::Banned,
        ] {
            assert!(CloseReason::Goodbye(lost.to_string()).peer_lost(), "{lost}");
        }
        assert!(CloseReason::Goodbye("close".into()).peer_lost());
    }

    #[test]
    fn ending_without_goodbye_counts_as_lost_unless_we_ended_it() {
        assert!(CloseReason::ClosedByPeer.peer_lost());
        assert!(CloseReason::WriteFailed.peer_lost());
        assert!(CloseReason::BadInput("x".into()).peer_lost());
        assert!(CloseReason::DialFailed("x".into()).peer_lost());
        assert!(!CloseReason::Aborted.peer_lost());
        assert!(!CloseReason::PeerDidNotClose.peer_lost());
        assert!(!CloseReason::Shutdown.peer_lost());
    }
}
