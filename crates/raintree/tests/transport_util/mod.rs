//! Helpers shared by the transport tests: loopback nodes and event waiting.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use raintree::proto::wire::{Message, MessageId};
use raintree::proto::Address;
use raintree::transport::{Event, Events, Identity, Transport, TransportConfig, TransportMetrics};

/// Upper bound on any single wait in a test; generous so slow CI never flakes.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestNode {
    pub t: Transport,
    pub events: Events,
    pub metrics: TransportMetrics,
    pub identity: Identity,
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn config() -> TransportConfig {
    TransportConfig::new(loopback())
}

pub async fn start(identity: Identity, cfg: TransportConfig) -> TestNode {
    let metrics = TransportMetrics::new();
    let (t, events) = Transport::bind(identity.clone(), cfg, metrics.clone())
        .await
        .expect("bind");
    TestNode {
        t,
        events,
        metrics,
        identity,
    }
}

/// `n` nodes that all know each other, with `tweak` applied to each config.
pub async fn mesh(n: usize, tweak: impl Fn(&mut TransportConfig)) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let mut cfg = config();
        tweak(&mut cfg);
        nodes.push(start(Identity::generate(), cfg).await);
    }
    let book: HashMap<Address, SocketAddr> = nodes
        .iter()
        .map(|n| (n.t.address(), n.t.local_addr()))
        .collect();
    for n in &nodes {
        n.t.set_peers(book.clone());
    }
    nodes
}

pub fn direct(origin: Address, nonce: u64, payload: Bytes) -> Message {
    Message::Direct {
        id: MessageId { origin, nonce },
        payload,
    }
}

/// The next event matching `f`, skipping others; panics after [`WAIT`].
pub async fn next_matching<T>(events: &mut Events, mut f: impl FnMut(Event) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = events.recv().await.expect("event stream ended");
            if let Some(t) = f(ev) {
                return t;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

/// Collects `n` Direct messages, returning (peer, nonce, payload) in arrival order.
pub async fn recv_directs(events: &mut Events, n: usize) -> Vec<(Address, u64, Bytes)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let item = next_matching(events, |ev| match ev {
            Event::Message {
                peer,
                message: Message::Direct { id, payload },
            } => Some((peer, id.nonce, payload)),
            _ => None,
        })
        .await;
        out.push(item);
    }
    out
}

/// Answers every request with its payload reversed, until the stream ends.
pub fn spawn_echo(mut events: Events) -> tokio::task::JoinHandle<Events> {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let Event::Request {
                payload, responder, ..
            } = ev
            {
                let mut v = payload.to_vec();
                v.reverse();
                responder.respond(Bytes::from(v));
            }
        }
        events
    })
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

pub mod raw {
    //! A hand-driven client: completes the real handshake, then writes arbitrary bytes.

    use std::sync::Arc;

    use futures::StreamExt;
    use raintree::proto::Address;
    use raintree::transport::framing::TAG_LEN;
    use raintree::transport::handshake::{self, LocalKeys, NoiseReader};
    use raintree::transport::Identity;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::tcp::OwnedWriteHalf;
    use tokio::net::TcpStream;

    pub struct RawSession {
        pub reader: NoiseReader,
        pub writer: OwnedWriteHalf,
        pub cipher: Arc<raintree::transport::framing::Session>,
        pub nonce: u64,
        pub identity: Identity,
    }

    pub async fn connect(to: std::net::SocketAddr, expected: Address) -> RawSession {
        connect_as(Identity::generate(), to, expected).await
    }

    /// Like [`connect`] with a chosen identity (a listed peer turned hostile).
    pub async fn connect_as(
        identity: Identity,
        to: std::net::SocketAddr,
        expected: Address,
    ) -> RawSession {
        let keys = LocalKeys::generate(&identity).unwrap();
        let sock = TcpStream::connect(to).await.unwrap();
        let (r, mut w) = sock.into_split();
        let mut reader = handshake::noise_reader(r);
        let est = handshake::initiate(&keys, &mut reader, &mut w, expected)
            .await
            .unwrap();
        RawSession {
            reader,
            writer: w,
            cipher: est.cipher,
            nonce: 0,
            identity,
        }
    }

    impl RawSession {
        /// Encrypts `plain` as one Noise message and writes it with its u16 prefix.
        pub async fn send_plain(&mut self, plain: &[u8]) {
            let mut msg = vec![0u8; plain.len() + TAG_LEN];
            let n = self
                .cipher
                .write_message(self.nonce, plain, &mut msg)
                .unwrap();
            self.nonce += 1;
            let mut out = (n as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&msg[..n]);
            self.writer.write_all(&out).await.unwrap();
        }

        /// Frames and sends `msgs` in one Noise message per frame.
        pub async fn send_messages(&mut self, msgs: &[raintree::proto::wire::Message]) {
            for m in msgs {
                let frame = raintree::transport::framing::encode_frame(m);
                self.send_plain(&frame).await;
            }
        }

        /// Writes raw bytes to the socket.
        pub async fn send_raw(&mut self, bytes: &[u8]) {
            self.writer.write_all(bytes).await.unwrap();
        }

        /// True once the peer has closed the connection (EOF or reset).
        pub async fn closed_by_peer(&mut self) -> bool {
            tokio::time::timeout(super::WAIT, async {
                loop {
                    match self.reader.next().await {
                        None | Some(Err(_)) => return true,
                        Some(Ok(_)) => continue,
                    }
                }
            })
            .await
            .unwrap_or(false)
        }
    }

    /// True once the other end has closed a plain socket.
    pub async fn socket_closed(sock: &mut TcpStream) -> bool {
        let mut buf = [0u8; 256];
        tokio::time::timeout(super::WAIT, async {
            loop {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .unwrap_or(false)
    }
}
