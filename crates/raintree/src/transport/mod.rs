//! The transport: listener, Noise handshake, framing, connection pool, queues, shutdown.
//!
//! One [`Transport`] per node. Every connection starts with a Noise XX handshake proving both
//! Ed25519 identities (see `docs/WIRE.md`), then carries length-prefixed protobuf frames inside
//! Noise transport messages. At most one connection per peer is kept and reused for every
//! message; each peer has a byte-bounded queue (control messages first) that outlives its
//! connections, so a reconnect or a simultaneous-dial swap loses nothing.
//!
//! Call [`Transport::shutdown`] to stop: the listener and connection tasks hold the transport
//! alive, so dropping every handle without it leaves them running until the runtime stops.
//! Events are read by one owner through [`Events`]; while nobody reads, connection readers
//! wait (TCP pushes back on the senders, whose queues then fill and drop, counted).

// Layering, bottom up (each module imports only from those before it, and from this one's
// config and error types): book, queue, tiebreak, framing, handshake, metrics, events, conn,
// then registry, the one owner of the pool's state, whose files each add one path into it.
mod book;
mod conn;
mod events;
pub mod framing;
pub mod handshake;
mod identity;
mod metrics;
mod queue;
mod ratelimit;
mod registry;
mod score;
mod tiebreak;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use raintree_proto::wire::{self, Message};
use raintree_proto::Address;

pub use book::PeerBook;
pub use events::{CloseReason, Event, Events, RefuseReason, Responder};
pub use identity::Identity;
pub use metrics::TransportMetrics;
pub use ratelimit::HandshakeLimit;
pub use registry::ShutdownReport;
pub use score::{Offence, ScoreConfig};

use crate::net::Net;

use registry::Inner;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the transport: the data stays consistent per step.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Transport settings; [`TransportConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Where to listen (port 0 picks a free port; read it back with `local_addr`).
    pub listen: SocketAddr,
    /// Known peers and where they listen. The transport reads this book, never a copy: its
    /// owner may change it at any time (after removing peers, tell
    /// [`Transport::peers_removed`] so their connections close).
    pub peers: PeerBook,
    /// Accept authenticated peers that are not in `peers`.
    pub open: bool,
    /// Most inbound connections (handshaking ones included); the excess is closed at once.
    pub max_inbound: usize,
    /// Most outbound connections (dialling ones included).
    pub max_outbound: usize,
    /// A handshake not finished within this is dropped.
    pub handshake_timeout: Duration,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// Most bytes queued for one peer (payload plus a fixed per-message allowance).
    pub queue_bytes: usize,
    /// Most bytes queued for all peers together, counted the same way.
    pub total_queue_bytes: usize,
    /// Largest payload sent or accepted.
    pub max_payload: usize,
    /// Wait before redialling a peer after a failed dial; doubles per failure.
    pub dial_backoff: Duration,
    /// Upper bound of the doubling dial backoff.
    pub max_dial_backoff: Duration,
    /// Events buffered for the application before readers wait for it.
    pub event_capacity: usize,
    /// Payload bytes of unread `Message` and `Request` events before readers wait for the
    /// application (one event larger than this still passes, alone).
    pub event_bytes: usize,
    /// Most bytes a writer takes from its queue for one socket write.
    pub batch_bytes: usize,
    /// After sending Goodbye, how long to wait for the peer to close its side.
    pub linger: Duration,
    /// New inbound connections allowed per remote IP (token bucket), checked before the
    /// handshake.
    pub handshake_limit: HandshakeLimit,
    /// Misbehaviour scores: ban threshold, ban duration, decay (see [`Offence::points`]).
    pub score: ScoreConfig,
    /// The network the sockets live on: real TCP, or turmoil's simulation under test.
    pub net: Net,
}

impl TransportConfig {
    /// Defaults: 125 inbound / 125 outbound, 5 s handshake, 5 min idle, 16 MiB per peer and
    /// 32 MiB for all peers queued, 16 MiB of unread events.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            peers: PeerBook::new(),
            open: false,
            max_inbound: 125,
            max_outbound: 125,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            queue_bytes: 16 * 1024 * 1024,
            total_queue_bytes: 32 * 1024 * 1024,
            max_payload: wire::DEFAULT_MAX_PAYLOAD,
            dial_backoff: Duration::from_millis(250),
            max_dial_backoff: Duration::from_secs(30),
            event_capacity: 4096,
            event_bytes: 16 * 1024 * 1024,
            batch_bytes: 256 * 1024,
            linger: Duration::from_secs(2),
            handshake_limit: HandshakeLimit::default(),
            score: ScoreConfig::default(),
            net: Net::default(),
        }
    }
}

impl TransportConfig {
    fn check(&self) -> Result<(), TransportError> {
        if self.max_payload >= u32::MAX as usize / 2 {
            return Err(TransportError::Config(
                "max_payload must be below 2 GiB".into(),
            ));
        }
        if self.event_capacity == 0 {
            return Err(TransportError::Config("event_capacity must be > 0".into()));
        }
        if self.event_bytes == 0 || self.event_bytes > u32::MAX as usize {
            return Err(TransportError::Config(
                "event_bytes must be between 1 and 4 GiB".into(),
            ));
        }
        Ok(())
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The listener could not bind.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Noise library could not generate keys.
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    /// A setting is out of range.
    #[error("invalid config: {0}")]
    Config(String),
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer is neither in the peer list nor connected.
    #[error("unknown peer {0}")]
    UnknownPeer(Address),
    /// The peer's queue has no room for this message.
    #[error("queue for {peer} full ({queued} of {limit} bytes)")]
    QueueFull {
        /// The peer.
        peer: Address,
        /// Bytes already queued.
        queued: usize,
        /// The limit.
        limit: usize,
    },
    /// All peers' queues together hold `total_queue_bytes`; nothing was queued.
    #[error("all queues full ({used} of {limit} bytes)")]
    TotalQueueFull {
        /// Bytes queued across every peer.
        used: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload exceeds `max_payload`; nothing was sent.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Request, Response and Goodbye belong to the transport itself (use `request`, the
    /// `Responder` and `shutdown`); the caller may not send them.
    #[error("{0} messages are sent by the transport itself")]
    Reserved(&'static str),
    /// The peer is banned for misbehaving; nothing is sent to it until the ban ends.
    #[error("peer {0} is banned")]
    Banned(Address),
    /// Dialling the peer would exceed `max_outbound`.
    #[error("outbound connection limit reached")]
    OutboundLimit,
    /// The transport is shutting down.
    #[error("transport is shut down")]
    Shutdown,
}

/// How a request ended without a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request could not be queued.
    #[error("send: {0}")]
    Send(#[from] SendError),
    /// No response within the deadline.
    #[error("no response within the deadline")]
    Timeout,
    /// The connection to the peer closed before the response arrived.
    #[error("connection closed before the response")]
    ConnectionClosed,
    /// The transport shut down before the response arrived.
    #[error("transport shut down before the response")]
    Shutdown,
}

/// A running transport. Cheap to clone; every clone drives the same listener and pool.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl Transport {
    /// Binds the listener and starts accepting; returns the handle and its event stream.
    pub async fn bind(
        identity: Identity,
        config: TransportConfig,
        metrics: TransportMetrics,
    ) -> Result<(Transport, Events), TransportError> {
        config.check()?;
        let (inner, events) = Inner::start(identity, config, metrics).await?;
        Ok((Transport { inner }, events))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// This node's identity address.
    pub fn address(&self) -> Address {
        self.inner.address()
    }

    /// The metrics this transport updates.
    pub fn metrics(&self) -> &TransportMetrics {
        self.inner.metrics()
    }

    /// Replaces the peer book's entries; connections to peers no longer in it close.
    pub fn set_peers(&self, peers: HashMap<Address, SocketAddr>) {
        self.inner.set_peers(peers);
    }

    /// Closes the connections of `peers`, which the owner has removed from the peer book,
    /// dropping what is queued for them; peers the book lists again are left alone.
    pub fn peers_removed(&self, peers: &[Address]) {
        self.inner.peers_removed(peers.iter().copied());
    }

    /// Queues `msg` for `peer` on its pooled connection, dialling if needed.
    ///
    /// Returns once queued: it never waits for the network. Fails if the peer is unknown, its
    /// queue is full, the payload is too large or the transport is shut down.
    pub fn send(&self, peer: Address, msg: Message) -> Result<(), SendError> {
        self.inner.enqueue_app(peer, msg)
    }

    /// Queues `msg` for `peer` without waiting; a message that cannot be queued is dropped and
    /// counted in `queue_drops_total`.
    pub fn write(&self, peer: Address, msg: Message) {
        if let Err(e) = self.inner.enqueue_app(peer, msg) {
            tracing::trace!(%peer, error = %e, "write dropped");
        }
    }

    /// Adds `offence` to `peer`'s misbehaviour score. Past `score.ban_threshold` the peer's
    /// connection is closed at once (no Goodbye) and the peer is banned for
    /// `score.ban_duration`: sends to it fail and its handshakes are refused.
    pub fn penalise(&self, peer: Address, offence: Offence) {
        self.inner.penalise(peer, offence);
    }

    /// Payload bytes of events waiting for the application, as counted against `event_bytes`
    /// (including any a reader waiting for room already holds).
    pub fn event_bytes_in_flight(&self) -> usize {
        self.inner.event_bytes_in_flight()
    }

    /// Bytes queued across every peer now, as counted against `total_queue_bytes`.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued_bytes()
    }

    /// True while `peer` is banned.
    pub fn is_banned(&self, peer: Address) -> bool {
        self.inner.is_banned(&peer)
    }

    /// Sends a request and waits up to `deadline` for its response.
    ///
    /// Ends in exactly one outcome. Cancel-safe: dropping the future forgets the request.
    pub async fn request(
        &self,
        peer: Address,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, RequestError> {
        self.inner.request(peer, payload, deadline).await
    }

    /// Stops accepting, drains queued sends up to `deadline`, sends Goodbye on every
    /// connection, closes every socket and returns once every task has ended.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.inner.shutdown(deadline).await
    }
}
