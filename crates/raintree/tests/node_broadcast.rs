//! End-to-end: real nodes on loopback, real transport, the protocol engine in between.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use raintree::node::{Delivery, Node, NodeConfig, NodeError, NodeStreams, PeerEntry};
use raintree::proto::broadcast::{Config, Redundancy};
use raintree::proto::wire::Strategy;
use raintree::transport::Identity;
use tokio::time::timeout;

/// Upper bound for a whole-network wait; a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

async fn network(n: usize, protocol: Config) -> Vec<(Node, NodeStreams)> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cfg = NodeConfig::new(
            Identity::generate(),
            "127.0.0.1:0".parse().unwrap(),
            Vec::new(),
        );
        cfg.protocol = protocol.clone();
        // Both layers must agree on the payload limit (Node::start checks it).
        cfg.transport.max_payload = protocol.max_payload;
        nodes.push(Node::start(cfg).await.expect("node starts"));
    }
    let entries: Vec<PeerEntry> = nodes
        .iter()
        .map(|(n, _)| PeerEntry {
            address: n.address(),
            addr: n.local_addr(),
        })
        .collect();
    for (node, _) in &nodes {
        node.add_peers(&entries).await.expect("node running");
        assert_eq!(node.peers().len(), n - 1);
    }
    nodes
}

async fn next_delivery(streams: &mut NodeStreams) -> Delivery {
    timeout(WAIT, streams.deliveries.recv())
        .await
        .expect("delivery before the deadline")
        .expect("node still running")
}

async fn shutdown_all(nodes: Vec<(Node, NodeStreams)>) {
    for (node, _) in &nodes {
        node.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_broadcast_reaches_everyone_once() {
    // A generous ACK deadline: cold connections on a loaded machine must not cause resends.
    let cfg = Config {
        strategy: Strategy::Exact,
        ack_timeout: Duration::from_secs(10),
        min_ack_timeout: Duration::from_secs(10),
        max_ack_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let mut nodes = network(13, cfg).await;
    let payload = Bytes::from_static(b"block 1");
    let id = nodes[0].0.broadcast(payload.clone()).await.unwrap();
    for (_, streams) in nodes.iter_mut().skip(1) {
        let d = next_delivery(streams).await;
        assert_eq!(d.id, id);
        assert_eq!(d.payload, payload);
    }
    // Exactly N-1 payload sends in the whole network: the exact tree has no duplicates.
    let sent: u64 = nodes.iter().map(|(n, _)| n.stats().gossip_sent).sum();
    let dups: u64 = nodes.iter().map(|(n, _)| n.stats().duplicates).sum();
    assert_eq!(sent, 12);
    assert_eq!(dups, 0);
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_broadcasts_from_rotating_originators_each_delivered_once() {
    let cfg = Config {
        strategy: Strategy::Reference,
        redundancy: Redundancy::Both,
        ..Config::default()
    };
    let mut nodes = network(9, cfg).await;
    let mut ids = HashSet::new();
    for k in 0..18usize {
        let origin = k % nodes.len();
        let id = nodes[origin]
            .0
            .broadcast(Bytes::from(vec![k as u8; 2048]))
            .await
            .unwrap();
        ids.insert(id);
    }
    for (node, streams) in nodes.iter_mut() {
        let me = node.address();
        let expected: HashSet<_> = ids.iter().filter(|id| id.origin != me).copied().collect();
        let mut got = HashSet::new();
        while got.len() < expected.len() {
            let d = next_delivery(streams).await;
            if d.id.origin == me {
                continue;
            }
            assert!(got.insert(d.id), "delivered twice: {:?}", d.id);
        }
        assert_eq!(got, expected);
    }
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peers_are_covered_by_acks_and_cleanup() {
    let cfg = Config {
        strategy: Strategy::Exact,
        acks: true,
        ack_timeout: Duration::from_millis(200),
        cleanup: true,
        cleanup_delay: Duration::from_millis(200),
        igyw_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let mut nodes = network(12, cfg).await;
    // Kill the originator's first exact-tree target (view offset 4, owning offsets 4..8) and
    // a leaf (offset 9): offsets 5..7 are then reachable only through re-delegation or clean-up.
    let mut sorted: Vec<_> = nodes.iter().map(|(n, _)| n.address()).collect();
    sorted.sort();
    let origin = sorted
        .iter()
        .position(|a| *a == nodes[0].0.address())
        .unwrap();
    let dead: Vec<_> = [4usize, 9]
        .iter()
        .map(|off| sorted[(origin + off) % sorted.len()])
        .collect();
    for (node, _) in nodes.iter().filter(|(n, _)| dead.contains(&n.address())) {
        node.shutdown(Duration::from_secs(1)).await;
    }
    let id = nodes[0]
        .0
        .broadcast(Bytes::from_static(b"x"))
        .await
        .unwrap();
    for (node, streams) in nodes.iter_mut().skip(1) {
        if dead.contains(&node.address()) {
            continue;
        }
        let d = next_delivery(streams).await;
        assert_eq!(d.id, id);
    }
    // The originator's stats are published before its re-delegated send leaves, so by now
    // they show the failure (a timeout or the transport's report) that routed around the dead
    // target.
    let s = nodes[0].0.stats();
    assert!(
        s.ack_timeouts + s.unreachable > 0,
        "dead target must be noticed"
    );
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_send_and_request_response() {
    let mut nodes = network(2, Config::default()).await;
    let b = nodes[1].0.address();
    nodes[0].0.send(b, Bytes::from_static(b"direct")).unwrap();
    let d = next_delivery(&mut nodes[1].1).await;
    assert_eq!(d.payload, Bytes::from_static(b"direct"));

    let (_, ref mut streams_b) = nodes[1];
    let mut requests = std::mem::replace(&mut streams_b.requests, tokio::sync::mpsc::channel(1).1);
    let echo = tokio::spawn(async move {
        let req = requests.recv().await.expect("one request");
        let mut answer = req.payload.to_vec();
        answer.reverse();
        req.responder.respond(Bytes::from(answer));
    });
    let resp = nodes[0]
        .0
        .request(b, Bytes::from_static(b"abc"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp, Bytes::from_static(b"cba"));
    echo.await.unwrap();
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_broadcast_is_refused_at_the_sender() {
    let cfg = Config {
        max_payload: 1024,
        ..Config::default()
    };
    let nodes = network(2, cfg).await;
    let err = nodes[0]
        .0
        .broadcast(Bytes::from(vec![0u8; 1025]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1025"), "{err}");
    assert_eq!(nodes[0].0.stats().gossip_sent, 0);
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_list_changes_apply_to_new_broadcasts() {
    let cfg = Config {
        strategy: Strategy::Exact,
        ack_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let mut nodes = network(4, cfg).await;
    let gone = nodes[3].0.address();
    for (node, _) in &nodes[..3] {
        node.remove_peers(&[gone]).await.unwrap();
        assert_eq!(node.peers().len(), 2);
    }
    let first = nodes[0]
        .0
        .broadcast(Bytes::from_static(b"a"))
        .await
        .unwrap();
    for (_, streams) in nodes[1..3].iter_mut() {
        assert_eq!(next_delivery(streams).await.id, first);
    }
    // The exact tree over the three remaining peers: two sends, none to the removed one.
    let sent: u64 = nodes.iter().map(|(n, _)| n.stats().gossip_sent).sum();
    assert_eq!(sent, 2);
    assert_eq!(nodes[3].0.stats().deliveries, 0);

    let back = [raintree::node::PeerEntry {
        address: gone,
        addr: nodes[3].0.local_addr(),
    }];
    for (node, _) in &nodes[..3] {
        node.add_peers(&back).await.unwrap();
    }
    let second = nodes[0]
        .0
        .broadcast(Bytes::from_static(b"b"))
        .await
        .unwrap();
    assert_eq!(next_delivery(&mut nodes[3].1).await.id, second);
    shutdown_all(nodes).await;
}

#[tokio::test]
async fn start_refuses_disagreeing_payload_limits() {
    let mut cfg = NodeConfig::new(
        Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        Vec::new(),
    );
    cfg.protocol.max_payload = 1024;
    cfg.transport.max_payload = 2048;
    match Node::start(cfg).await {
        Err(NodeError::MaxPayloadMismatch {
            transport: 2048,
            protocol: 1024,
        }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a node with disagreeing payload limits started"),
    }
}

#[test]
fn library_and_protocol_defaults_agree() {
    // A library node and a CLI node (whose file defaults come from these) must accept each
    // other: same strategy, same payload limit on both layers.
    let cfg = NodeConfig::new(
        Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        Vec::new(),
    );
    assert_eq!(cfg.protocol.strategy, Strategy::Exact);
    assert_eq!(cfg.protocol.max_payload, cfg.transport.max_payload);
}
