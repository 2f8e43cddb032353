//! Misbehaviour scores: a peer that keeps sending bad input is cut off and banned for a while,
//! then let back in; honest peers are never disturbed.

mod transport_util;

use std::time::Duration;

use bytes::Bytes;
use raintree::node::{Node, NodeConfig, PeerEntry};
use raintree::proto::wire::{
    payload_hash, signed_bytes, Gossip, Message, MessageId, OriginSignature, Route, Strategy,
};
use raintree::transport::{
    Event, Identity, Offence, RefuseReason, ScoreConfig, SendError, TransportConfig,
};
use tokio::time::Instant;
use transport_util::raw;
use transport_util::*;

const BAN: Duration = Duration::from_millis(1500);

fn scoring(c: &mut TransportConfig) {
    c.open = true;
    c.max_payload = 1000;
    c.score = ScoreConfig {
        ban_threshold: 50.0,
        ban_duration: BAN,
        half_life: Duration::from_secs(3600),
        ..ScoreConfig::default()
    };
}

/// An undecodable frame: two bytes that are no Envelope.
fn garbage() -> Vec<u8> {
    let mut plain = 2u32.to_be_bytes().to_vec();
    plain.extend_from_slice(&[0xff, 0xff]);
    plain
}

async fn refused(events: &mut raintree::transport::Events) -> RefuseReason {
    next_matching(events, |ev| match ev {
        Event::Refused { reason, .. } => Some(reason),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_peer_sending_garbage_is_banned_refused_and_let_back_after_the_ban() {
    let mut b = start(Identity::generate(), {
        let mut c = config();
        scoring(&mut c);
        c
    })
    .await;
    let bad = Identity::generate();
    // Two malformed frames (25 points each) reach the threshold of 50.
    for round in 0..2 {
        let mut s = raw::connect_as(bad.clone(), b.t.local_addr(), b.t.address()).await;
        s.send_plain(&garbage()).await;
        assert!(s.closed_by_peer().await, "round {round}: socket left open");
    }
    let (peer, ban) = next_matching(&mut b.events, |ev| match ev {
        Event::Banned { peer, ban } => Some((peer, ban)),
        _ => None,
    })
    .await;
    let banned_at = Instant::now();
    assert_eq!((peer, ban), (bad.address(), BAN));
    assert_eq!(b.metrics.penalties("malformed"), 2);
    assert_eq!((b.metrics.bans(), b.metrics.banned_peers()), (1, 1));
    assert!(b.t.is_banned(bad.address()));

    // While banned: its handshakes are refused, sends to it fail, and nothing reaches us.
    let mut s = raw::connect_as(bad.clone(), b.t.local_addr(), b.t.address()).await;
    assert_eq!(
        refused(&mut b.events).await,
        RefuseReason::Banned(bad.address())
    );
    assert!(s.closed_by_peer().await);
    assert_eq!(b.metrics.refused("banned"), 1);
    let r =
        b.t.send(bad.address(), direct(b.t.address(), 1, Bytes::new()));
    assert_eq!(r, Err(SendError::Banned(bad.address())));
    assert_eq!(b.metrics.queue_drops("banned"), 1);

    // After the ban: the same identity gets in and is heard again.
    tokio::time::sleep_until(banned_at + BAN).await;
    assert!(!b.t.is_banned(bad.address()));
    let mut s = raw::connect_as(bad.clone(), b.t.local_addr(), b.t.address()).await;
    s.send_messages(&[direct(bad.address(), 7, Bytes::from_static(b"sorry"))])
        .await;
    let got = recv_directs(&mut b.events, 1).await;
    assert_eq!(got[0], (bad.address(), 7, Bytes::from_static(b"sorry")));
    drop(s);
    assert!(!b.t.shutdown(Duration::from_secs(5)).await.forced);
}

#[tokio::test]
async fn a_ban_closes_the_live_connection_without_goodbye_and_stops_redials() {
    // A and B are listed peers with a working connection; B penalises A from the outside
    // (as the node's driver does on a forgery).
    let mut b_cfg = config();
    scoring(&mut b_cfg);
    b_cfg.open = false;
    let mut b = start(Identity::generate(), b_cfg).await;
    let a_cfg = config();
    a_cfg.peers.insert(b.t.address(), b.t.local_addr());
    let mut a = start(Identity::generate(), a_cfg).await;
    b.t.set_peers([(a.t.address(), a.t.local_addr())].into());
    a.t.send(b.t.address(), direct(a.t.address(), 0, Bytes::new()))
        .unwrap();
    recv_directs(&mut b.events, 1).await;

    for _ in 0..4 {
        b.t.penalise(a.t.address(), Offence::Forged);
    }
    assert!(!b.t.is_banned(a.t.address()));
    b.t.penalise(a.t.address(), Offence::Forged);
    assert!(b.t.is_banned(a.t.address()));
    assert_eq!(b.metrics.penalties("forged"), 5);
    // B's side closes as "banned"; A sees the connection end without any Goodbye.
    let reason = next_matching(&mut b.events, |ev| match ev {
        Event::ConnectionDown { reason, .. } => Some((reason.to_string(), reason.peer_lost())),
        _ => None,
    })
    .await;
    assert_eq!(reason, ("banned".to_string(), true));
    let reason = next_matching(&mut a.events, |ev| match ev {
        Event::ConnectionDown { reason, .. } => Some(reason.to_string()),
        _ => None,
    })
    .await;
    assert!(!reason.starts_with("goodbye"), "{reason}");
    assert_eq!(a.metrics.frames_received("goodbye"), 0);
    // A redials to send more: refused at B while the ban lasts.
    a.t.send(b.t.address(), direct(a.t.address(), 1, Bytes::new()))
        .unwrap();
    assert_eq!(
        refused(&mut b.events).await,
        RefuseReason::Banned(a.t.address())
    );
    // B does not dial a banned peer either.
    assert_eq!(
        b.t.send(a.t.address(), direct(b.t.address(), 2, Bytes::new())),
        Err(SendError::Banned(a.t.address()))
    );
    assert_eq!(b.metrics.connections_opened("outbound"), 0);
    a.t.shutdown(Duration::from_secs(5)).await;
    b.t.shutdown(Duration::from_secs(5)).await;
}

/// A gossip copy in `origin`'s name that no key signed.
fn forged(origin: MessageId) -> Message {
    Message::Gossip(Gossip {
        id: origin,
        level_or_range: 1,
        strategy: Strategy::Exact,
        route: Route::Tree,
        origin_time_us: 1,
        hops: 1,
        payload: Bytes::from_static(b"fake block"),
        signature: None,
    })
}

#[tokio::test]
async fn a_node_bans_a_listed_peer_that_forges_broadcasts() {
    let honest = Identity::generate();
    let hostile = Identity::generate();
    let mut cfg = NodeConfig::new(Identity::generate(), loopback(), Vec::new());
    cfg.transport.score = ScoreConfig {
        ban_threshold: 30.0,
        ban_duration: Duration::from_secs(600),
        ..ScoreConfig::default()
    };
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    cfg.peers = [&honest, &hostile]
        .iter()
        .map(|i| PeerEntry {
            address: i.address(),
            addr: unused,
        })
        .collect();
    let (node, mut streams) = Node::start(cfg).await.unwrap();
    let mut s = raw::connect_as(hostile.clone(), node.local_addr(), node.address()).await;
    // Three forgeries in the honest peer's name (10 points each) reach the threshold.
    let msgs: Vec<Message> = (0..3)
        .map(|n| {
            forged(MessageId {
                origin: honest.address(),
                nonce: n,
            })
        })
        .collect();
    s.send_messages(&msgs).await;
    assert!(s.closed_by_peer().await, "the forger's socket stays open");
    let text = node.metrics_text();
    assert!(text.contains("raintree_transport_bans_total 1"), "{text}");
    assert!(text.contains("raintree_transport_banned_peers 1"), "{text}");
    assert!(
        text.contains("raintree_transport_penalties_total{offence=\"forged\"} 3"),
        "{text}"
    );
    assert_eq!(node.stats().deliveries, 0);
    assert!(streams.deliveries.try_recv().is_err());
    // The forger cannot come back while banned.
    let mut s = raw::connect_as(hostile, node.local_addr(), node.address()).await;
    assert!(s.closed_by_peer().await);
    node.shutdown(Duration::from_secs(5)).await;
    let text = node.metrics_text();
    assert!(
        text.contains("raintree_transport_refused_connections_total{reason=\"banned\"} 1"),
        "{text}"
    );
}

/// A validly signed tree copy of `who`'s own broadcast number `nonce`, carrying `range`.
fn own_broadcast(who: &Identity, nonce: u64, range: u32) -> Gossip {
    let id = MessageId {
        origin: who.address(),
        nonce,
    };
    let payload = Bytes::from_static(b"block");
    let signature = who.sign(&signed_bytes(
        &id,
        7,
        Strategy::Exact,
        &payload_hash(&payload),
    ));
    Gossip {
        id,
        level_or_range: range,
        strategy: Strategy::Exact,
        route: Route::Tree,
        origin_time_us: 7,
        hops: 1,
        payload,
        signature: Some(std::sync::Arc::new(OriginSignature {
            public_key: who.public_key(),
            signature,
        })),
    }
}

#[tokio::test]
async fn an_inflated_range_is_cut_delivered_and_scored_lightly() {
    let hostile = Identity::generate();
    let honest = Identity::generate();
    let mut cfg = NodeConfig::new(Identity::generate(), loopback(), Vec::new());
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    cfg.peers = [&honest, &hostile]
        .iter()
        .map(|i| PeerEntry {
            address: i.address(),
            addr: unused,
        })
        .collect();
    let (node, mut streams) = Node::start(cfg).await.unwrap();
    let mut s = raw::connect_as(hostile.clone(), node.local_addr(), node.address()).await;
    // A validly signed broadcast of its own, with a range no sender could give.
    let g = own_broadcast(&hostile, 1, 1 << 31);
    let (id, payload) = (g.id, g.payload.clone());
    s.send_messages(&[Message::Gossip(g)]).await;
    let d = tokio::time::timeout(WAIT, streams.deliveries.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.id, d.payload), (id, payload));
    let text = node.metrics_text();
    assert!(
        text.contains("raintree_transport_penalties_total{offence=\"range_cut\"} 1"),
        "{text}"
    );
    assert!(text.contains("raintree_transport_bans_total 0"), "{text}");
    node.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_node_bans_a_listed_peer_that_floods_its_own_broadcasts() {
    let hostile = Identity::generate();
    let mut cfg = NodeConfig::new(Identity::generate(), loopback(), Vec::new());
    cfg.protocol.seen_capacity = 64;
    cfg.protocol.origin_share = 8;
    cfg.transport.score = ScoreConfig {
        ban_threshold: 5.0,
        ban_duration: Duration::from_secs(600),
        ..ScoreConfig::default()
    };
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    cfg.peers = vec![PeerEntry {
        address: hostile.address(),
        addr: unused,
    }];
    let (node, _streams) = Node::start(cfg).await.unwrap();
    let mut s = raw::connect_as(hostile.clone(), node.local_addr(), node.address()).await;
    // Valid broadcasts of its own, far more than its share: past half the set (32 ids) each
    // is refused and scores 0.25, so the 20th refusal bans it.
    let msgs: Vec<Message> = (0..100)
        .map(|n| Message::Gossip(own_broadcast(&hostile, n, 1)))
        .collect();
    s.send_messages(&msgs).await;
    assert!(s.closed_by_peer().await, "the flooder's socket stays open");
    let text = node.metrics_text();
    assert!(text.contains("raintree_transport_bans_total 1"), "{text}");
    // Messages read before the ban took effect are still refused and scored.
    let floods = node.stats().flood;
    assert!((20..=68).contains(&floods), "{floods} refused");
    assert!(
        text.contains(&format!(
            "raintree_transport_penalties_total{{offence=\"flood\"}} {floods}"
        )),
        "{text}"
    );
    assert_eq!(node.stats().deliveries, 32);
    node.shutdown(Duration::from_secs(5)).await;
}
