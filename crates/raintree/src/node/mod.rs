//! A RainTree node: the `raintree-proto` engine driven by the transport.
//!
//! One driver task owns the engine. It reacts to transport events, timers and API commands,
//! and turns the engine's outputs into fire-and-forget writes and application deliveries, so a
//! slow peer never stalls the protocol.

mod deliveries;
mod driver;
mod memory;

pub use deliveries::Deliveries;
use deliveries::Unread;
pub use memory::{MemoryBound, FIXED_BYTES};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::registry::Registry;
use raintree_proto::broadcast::{self, EngineError, Stats};
use raintree_proto::peers::PeerList;
use raintree_proto::wire::{Message, MessageId};
use raintree_proto::Address;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::metrics::NodeMetrics;
use crate::transport::{
    Identity, PeerBook, RequestError, Responder, SendError, ShutdownReport, Transport,
    TransportConfig, TransportError, TransportMetrics,
};

/// A known peer: its address and where it listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer's identity address.
    pub address: Address,
    /// The peer's TCP listen address.
    pub addr: SocketAddr,
}

/// Everything a node needs to start.
pub struct NodeConfig {
    /// This node's Ed25519 identity.
    pub identity: Identity,
    /// Listener, limits and queues (`transport.peers` is replaced by the node's own book,
    /// made from `peers`).
    pub transport: TransportConfig,
    /// The other peers (self may be included; it is ignored in the peer book).
    pub peers: Vec<PeerEntry>,
    /// Protocol settings: strategy, ACKs, redundancy, clean-up, seen-set.
    pub protocol: broadcast::Config,
    /// Deliveries the application's stream holds at most (a count; their bytes count against
    /// `delivery_buffer_bytes` too).
    pub delivery_capacity: usize,
    /// Bytes of deliveries (payload plus 64 each) not read by the application yet, in its
    /// stream and in the node's buffer behind it. The protocol (ACKs, forwarding, timers)
    /// carries on meanwhile; past it the node stops reading from the network until the
    /// application catches up, so deliveries in memory stay within this plus one payload.
    pub delivery_buffer_bytes: usize,
    /// Incoming requests buffered for the application; past this they are refused.
    pub request_capacity: usize,
    /// Seed of the engine's RNG; `None` draws one. Fixed seeds make simulations replay.
    pub seed: Option<u64>,
}

impl NodeConfig {
    /// A config with default limits and protocol settings.
    pub fn new(identity: Identity, listen: SocketAddr, peers: Vec<PeerEntry>) -> Self {
        Self {
            identity,
            transport: TransportConfig::new(listen),
            peers,
            protocol: broadcast::Config::default(),
            delivery_capacity: 16,
            delivery_buffer_bytes: 16 * 1024 * 1024,
            request_capacity: 1024,
            seed: None,
        }
    }
}

/// A broadcast delivered to the application, exactly once per `(origin, nonce)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The broadcast's id: originator and nonce.
    pub id: MessageId,
    /// The payload.
    pub payload: Bytes,
    /// Originator's clock when it broadcast, microseconds since the Unix epoch.
    pub origin_time_us: u64,
    /// Hops from the originator.
    pub hops: u32,
}

/// A request from a peer waiting for the application's answer.
pub struct IncomingRequest {
    /// Who asked.
    pub peer: Address,
    /// The request body.
    pub payload: Bytes,
    /// Answer with `responder.respond(bytes)`; dropping it lets the requester time out.
    pub responder: Responder,
}

/// What the application reads from a running node.
pub struct NodeStreams {
    /// Broadcasts and direct messages, each delivered once.
    pub deliveries: Deliveries,
    /// Requests from peers.
    pub requests: mpsc::Receiver<IncomingRequest>,
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The transport could not start.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The protocol refused the operation.
    #[error("protocol: {0}")]
    Protocol(#[from] EngineError),
    /// A send could not be queued.
    #[error("send: {0}")]
    Send(#[from] SendError),
    /// A request ended without a response.
    #[error("request: {0}")]
    Request(#[from] RequestError),
    /// The node has shut down.
    #[error("node is shut down")]
    Shutdown,
    /// The transport and the protocol disagree on the largest payload: a broadcast the engine
    /// accepts would be refused by the transport (or a frame accepted that the engine refuses).
    #[error("transport max_payload {transport} differs from protocol max_payload {protocol}")]
    MaxPayloadMismatch {
        /// `NodeConfig::transport.max_payload`.
        transport: usize,
        /// `NodeConfig::protocol.max_payload`.
        protocol: usize,
    },
}

pub(crate) enum Command {
    Broadcast {
        payload: Bytes,
        reply: oneshot::Sender<Result<MessageId, EngineError>>,
    },
    SetPeers(Arc<PeerList>),
}

/// A running node. Cheap to clone; every clone drives the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    address: Address,
    transport: Transport,
    commands: mpsc::Sender<Command>,
    stats: watch::Receiver<Stats>,
    registry: Registry,
    /// Where peers listen: the node keeps the book, the transport reads it.
    book: PeerBook,
    driver: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Node {
    /// Binds the listener, starts the driver and returns the node with its streams.
    pub async fn start(config: NodeConfig) -> Result<(Node, NodeStreams), NodeError> {
        let NodeConfig {
            identity,
            mut transport,
            peers,
            protocol,
            delivery_capacity,
            delivery_buffer_bytes,
            request_capacity,
            seed,
        } = config;
        if transport.max_payload != protocol.max_payload {
            return Err(NodeError::MaxPayloadMismatch {
                transport: transport.max_payload,
                protocol: protocol.max_payload,
            });
        }
        let address = identity.address();
        let book: PeerBook = peers
            .iter()
            .filter(|e| e.address != address)
            .map(|e| (e.address, e.addr))
            .collect();
        transport.peers = book.clone();
        let list = Arc::new(peer_list(address, &book));

        let mut registry = Registry::default();
        let transport_metrics = TransportMetrics::new();
        transport_metrics.register(&mut registry);
        let node_metrics = NodeMetrics::new();
        node_metrics.register(&mut registry);
        node_metrics.set_peers(list.len());

        // Nonces from a CSPRNG seeded by the OS, so an observed id cannot predict the next one;
        // a fixed seed (deterministic simulations only) replays them.
        let rng = match seed {
            Some(s) => <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(s),
            None => <rand::rngs::StdRng as rand::SeedableRng>::from_entropy(),
        };
        let signing_key = ed25519_dalek::SigningKey::from_bytes(&identity.secret_bytes());
        // A node always checks origins, whatever the config says (SPEC 7).
        let protocol = broadcast::Config {
            verify_signatures: true,
            ..protocol
        };
        let engine =
            broadcast::Engine::new(protocol, address, list, rng)?.with_signing_key(signing_key)?;
        let (transport, events) = Transport::bind(identity, transport, transport_metrics).await?;

        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (delivery_tx, delivery_rx) = mpsc::channel(delivery_capacity.max(1));
        let unread = Arc::new(Unread::default());
        let deliveries = Deliveries::new(delivery_rx, unread.clone());
        let (request_tx, requests) = mpsc::channel(request_capacity.max(1));
        let (stats_tx, stats) = watch::channel(Stats::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let driver = driver::Driver {
            engine,
            transport: transport.clone(),
            events,
            commands: cmd_rx,
            deliveries: delivery_tx,
            requests: request_tx,
            metrics: node_metrics,
            stats: stats_tx,
            stop: stop.clone(),
            delivery_buffer_bytes,
            unread,
        };
        let handle = tokio::spawn(driver.run());
        let node = Node {
            inner: Arc::new(Inner {
                address,
                transport,
                commands: cmd_tx,
                stats,
                registry,
                book,
                driver: tokio::sync::Mutex::new(Some(handle)),
                stop,
            }),
        };
        Ok((
            node,
            NodeStreams {
                deliveries,
                requests,
            },
        ))
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.inner.address
    }

    /// Where the listener is bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.transport.local_addr()
    }

    /// Broadcasts `payload` to every peer; resolves once the first sends are queued.
    pub async fn broadcast(&self, payload: Bytes) -> Result<MessageId, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Broadcast { payload, reply })
            .await
            .map_err(|_| NodeError::Shutdown)?;
        Ok(rx.await.map_err(|_| NodeError::Shutdown)??)
    }

    /// Sends `payload` to one peer over the pooled connection; it is delivered there once.
    pub fn send(&self, peer: Address, payload: Bytes) -> Result<MessageId, NodeError> {
        let id = MessageId {
            origin: self.inner.address,
            nonce: rand::random(),
        };
        self.inner
            .transport
            .send(peer, Message::Direct { id, payload })?;
        Ok(id)
    }

    /// Sends a request to `peer` and waits up to `deadline` for its response.
    pub async fn request(
        &self,
        peer: Address,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, NodeError> {
        Ok(self
            .inner
            .transport
            .request(peer, payload, deadline)
            .await?)
    }

    /// Adds peers (or moves them to a new listen address); broadcasts started after this
    /// resolves use the new list.
    pub async fn add_peers(&self, entries: &[PeerEntry]) -> Result<(), NodeError> {
        for e in entries.iter().filter(|e| e.address != self.inner.address) {
            self.inner.book.insert(e.address, e.addr);
        }
        self.update_engine_peers().await
    }

    /// Removes peers and closes their connections; broadcasts started after this resolves
    /// no longer include them.
    pub async fn remove_peers(&self, addresses: &[Address]) -> Result<(), NodeError> {
        let removed: Vec<Address> = addresses
            .iter()
            .filter(|a| self.inner.book.remove(a).is_some())
            .copied()
            .collect();
        self.inner.transport.peers_removed(&removed);
        self.update_engine_peers().await
    }

    /// Hands the engine the book's current peers.
    async fn update_engine_peers(&self) -> Result<(), NodeError> {
        let list = Arc::new(peer_list(self.inner.address, &self.inner.book));
        // Commands are handled in order, so a broadcast issued after this sees the new list.
        self.inner
            .commands
            .send(Command::SetPeers(list))
            .await
            .map_err(|_| NodeError::Shutdown)
    }

    /// The peers currently known, self excluded.
    pub fn peers(&self) -> Vec<PeerEntry> {
        let mut v: Vec<_> = self
            .inner
            .book
            .snapshot()
            .into_iter()
            .map(|(address, addr)| PeerEntry { address, addr })
            .collect();
        v.sort_by_key(|e| e.address);
        v
    }

    /// The protocol engine's counters as of its last step.
    pub fn stats(&self) -> Stats {
        self.inner.stats.borrow().clone()
    }

    /// The engine's counters, updated after every protocol step: wait on it with
    /// `wait_for` instead of polling [`Node::stats`].
    pub fn stats_watch(&self) -> watch::Receiver<Stats> {
        self.inner.stats.clone()
    }

    /// Prometheus text exposition of every node and transport metric.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// Stops the protocol, drains queued sends up to `deadline`, says Goodbye to every peer and
    /// returns once every task has ended. Later calls return an empty report.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.inner.stop.cancel();
        if let Some(handle) = self.inner.driver.lock().await.take() {
            let _ = handle.await;
        }
        self.inner.transport.shutdown(deadline).await
    }
}

/// Microseconds since the Unix epoch: the origin timestamp carried for latency metrics
/// (inside a turmoil simulation, the simulated clock's).
pub fn unix_micros() -> u64 {
    #[cfg(feature = "turmoil")]
    if let Some(d) = turmoil::since_epoch() {
        return u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn peer_list(me: Address, book: &PeerBook) -> PeerList {
    PeerList::new(book.snapshot().into_keys().chain(std::iter::once(me)))
}
