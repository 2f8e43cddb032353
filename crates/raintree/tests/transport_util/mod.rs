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
