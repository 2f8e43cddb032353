//! The node driver under failure and load: dead peers cost no deadline, timers fire under a
//! stream of events, and a stalled application never holds up ACKs or forwarding.

use std::time::Duration;

use bytes::Bytes;
use raintree::node::{Node, NodeConfig, NodeStreams, PeerEntry};
use raintree::proto::broadcast::Config;
use raintree::proto::wire::Strategy;
use raintree::transport::Identity;
use tokio::net::TcpListener;
use tokio::time::timeout;

/// Upper bound for a whole-network wait; a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

fn config(protocol: &Config) -> NodeConfig {
    let mut cfg = NodeConfig::new(
        Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        Vec::new(),
    );
    cfg.protocol = protocol.clone();
    cfg
}

async fn start(n: usize, protocol: &Config) -> Vec<(Node, NodeStreams)> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(Node::start(config(protocol)).await.expect("node starts"));
    }
    nodes
}

fn entries(nodes: &[(Node, NodeStreams)]) -> Vec<PeerEntry> {
    nodes
        .iter()
        .map(|(n, _)| PeerEntry {
            address: n.address(),
            addr: n.local_addr(),
        })
        .collect()
}

/// Exact tree, and a deadline so long that paying one would fail the test.
fn patient() -> Config {
    let long = Duration::from_secs(60);
    Config {
        strategy: Strategy::Exact,
        ack_timeout: long,
        min_ack_timeout: long,
        max_ack_timeout: long,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_costs_no_ack_deadline() {
    let mut nodes = start(10, &patient()).await;
    let book = entries(&nodes);
    for (node, _) in &nodes {
        node.add_peers(&book).await.unwrap();
    }
    // Three nodes stop; their parts of the tree must be re-split the moment the transport
    // finds them gone (Goodbye, or a refused dial), not after the 60 s deadline.
    let dead: Vec<(Node, NodeStreams)> = nodes.drain(7..).collect();
    for (node, _) in &dead {
        node.shutdown(Duration::from_secs(1)).await;
    }
    for round in 0..3 {
        let payload = Bytes::from(format!("block {round}"));
        let id = nodes[0].0.broadcast(payload).await.unwrap();
        for (_, streams) in nodes.iter_mut().skip(1) {
            let d = timeout(WAIT, streams.deliveries.recv())
                .await
                .expect("delivered without waiting out an ACK deadline")
                .expect("node running");
            assert_eq!(d.id, id);
        }
    }
    let s: Vec<_> = nodes.iter().map(|(n, _)| n.stats()).collect();
    assert_eq!(s.iter().map(|s| s.ack_timeouts).sum::<u64>(), 0);
    assert!(s.iter().map(|s| s.unreachable).sum::<u64>() > 0);
    for (node, _) in &nodes {
        node.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_deadlines_fire_under_a_continuous_stream_of_events() {
    let protocol = Config {
        strategy: Strategy::Exact,
        ack_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let nodes = start(2, &protocol).await;
    let (a, b) = (&nodes[0].0, &nodes[1].0);
    // A listed peer that accepts TCP and never answers: its ACK can only time out.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_entry = PeerEntry {
        address: Identity::generate().address(),
        addr: silent.local_addr().unwrap(),
    };
    let mut book = entries(&nodes);
    book.push(silent_entry);
    a.add_peers(&book).await.unwrap();
    b.add_peers(&book).await.unwrap();
    let _held = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            socks.push(s);
        }
    });
    // B floods A with direct messages for as long as the test runs.
    let flood = {
        let (b, to) = (b.clone(), a.address());
        tokio::spawn(async move {
            loop {
                if b.send(to, Bytes::from_static(b"noise")).is_err() {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut watch = a.stats_watch();
    timeout(WAIT, watch.wait_for(|s| s.deliveries > 1000))
        .await
        .expect("flood arrives")
        .unwrap();
    a.broadcast(Bytes::from_static(b"x")).await.unwrap();
    timeout(WAIT, watch.wait_for(|s| s.ack_timeouts >= 1))
        .await
        .expect("the overdue ACK is handled while events keep coming")
        .unwrap();
    flood.abort();
    for (node, _) in &nodes {
        node.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_application_does_not_hold_up_acks_or_forwarding() {
    let protocol = Config {
        strategy: Strategy::Exact,
        ..patient()
    };
    let mut nodes = Vec::new();
    for _ in 0..5 {
        let mut cfg = config(&protocol);
        // Room for one delivery only: every node's application below reads nothing at first.
        cfg.delivery_capacity = 1;
        nodes.push(Node::start(cfg).await.unwrap());
    }
    let book = entries(&nodes);
    for (node, _) in &nodes {
        node.add_peers(&book).await.unwrap();
    }
    // With 5 nodes the exact originator sends to view offsets 2, 4 and 1 (three ACKs), and
    // offset 2 forwards to offset 3.
    let origin = 0;
    let mut sorted: Vec<_> = book.iter().map(|e| e.address).collect();
    sorted.sort();
    let pos = sorted
        .iter()
        .position(|a| *a == nodes[origin].0.address())
        .unwrap();
    let at = |off: usize| {
        let addr = sorted[(pos + off) % 5];
        nodes.iter().position(|(n, _)| n.address() == addr).unwrap()
    };
    let (forwarder, leaf) = (at(2), at(3));
    let count = 50;
    for i in 0..count {
        nodes[origin]
            .0
            .broadcast(Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    // The forwarder's application has not read anything, yet every copy went on to the leaf.
    let mut got = 0;
    while got < count {
        timeout(WAIT, nodes[leaf].1.deliveries.recv())
            .await
            .expect("the leaf gets every message while the forwarder's app is stalled")
            .unwrap();
        got += 1;
    }
    let mut w = nodes[origin].0.stats_watch();
    timeout(WAIT, w.wait_for(|s| s.acks_received == 3 * count as u64))
        .await
        .expect("every tree copy ACKed")
        .unwrap();
    // Nothing was lost: the stalled application still gets all of them, in order.
    for i in 0..count {
        let d = timeout(WAIT, nodes[forwarder].1.deliveries.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.payload, Bytes::from(format!("m{i}")));
    }
    for (node, _) in &nodes {
        node.shutdown(Duration::from_secs(1)).await;
    }
}
