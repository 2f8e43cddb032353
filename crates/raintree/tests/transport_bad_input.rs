//! Hostile or broken input: each bad connection is refused or closed with a typed, counted
//! error while a well-behaved peer keeps exchanging messages with the same node.

mod transport_util;

use std::time::Duration;

use bytes::Bytes;
use raintree::proto::wire::Message;
use raintree::transport::{Event, Identity, RefuseReason, TransportConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use transport_util::raw::{self, socket_closed};
use transport_util::*;

/// A server `b` (tweaked by `f`) and a good peer `a` already connected to it.
async fn setup(f: impl Fn(&mut TransportConfig)) -> (TestNode, TestNode) {
    let mut b_cfg = config();
    f(&mut b_cfg);
    let mut b = start(Identity::generate(), b_cfg).await;
    let a_cfg = config();
    a_cfg.peers.insert(b.t.address(), b.t.local_addr());
    let a = start(Identity::generate(), a_cfg).await;
    b.t.set_peers([(a.t.address(), a.t.local_addr())].into());
    a.t.send(b.t.address(), direct(a.t.address(), 0, Bytes::new()))
        .unwrap();
    recv_directs(&mut b.events, 1).await;
    (a, b)
}

/// The good pair still works both ways over its existing connection.
async fn still_working(a: &mut TestNode, b: &mut TestNode) {
    let nonce = rand_nonce();
    a.t.send(
        b.t.address(),
        direct(a.t.address(), nonce, Bytes::from_static(b"ok")),
    )
    .unwrap();
    b.t.send(
        a.t.address(),
        direct(b.t.address(), nonce, Bytes::from_static(b"ok")),
    )
    .unwrap();
    assert_eq!(recv_directs(&mut b.events, 1).await[0].1, nonce);
    assert_eq!(recv_directs(&mut a.events, 1).await[0].1, nonce);
    assert_eq!(a.metrics.connections_opened("outbound"), 1);
}

fn rand_nonce() -> u64 {
    rand::random()
}

async fn finish(a: TestNode, b: TestNode) {
    assert!(!a.t.shutdown(Duration::from_secs(5)).await.forced);
    assert!(!b.t.shutdown(Duration::from_secs(5)).await.forced);
}

async fn refused(events: &mut raintree::transport::Events) -> RefuseReason {
    next_matching(events, |ev| match ev {
        Event::Refused { reason, .. } => Some(reason),
        _ => None,
    })
    .await
}

async fn conn_error(events: &mut raintree::transport::Events) -> String {
    next_matching(events, |ev| match ev {
        Event::ConnectionDown { reason, .. } if reason.to_string().starts_with("error") => {
            Some(reason.to_string())
        }
        _ => None,
    })
    .await
}

#[tokio::test]
async fn garbage_before_the_handshake_is_refused() {
    let (mut a, mut b) = setup(|_| {}).await;
    let mut sock = TcpStream::connect(b.t.local_addr()).await.unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: raintree\r\n\r\n")
        .await
        .unwrap();
    sock.shutdown().await.unwrap();
    assert!(matches!(
        refused(&mut b.events).await,
        RefuseReason::HandshakeFailed(_)
    ));
    assert!(socket_closed(&mut sock).await);
    // A well-sized first message followed by a forged third one fails in Noise.
    let mut sock = TcpStream::connect(b.t.local_addr()).await.unwrap();
    let mut m1 = vec![0, 32];
    m1.extend_from_slice(&[9u8; 32]);
    sock.write_all(&m1).await.unwrap();
    let mut m3 = vec![0, 100];
    m3.extend_from_slice(&[7u8; 100]);
    sock.write_all(&m3).await.unwrap();
    assert_eq!(
        refused(&mut b.events).await,
        RefuseReason::HandshakeFailed("noise")
    );
    assert!(socket_closed(&mut sock).await);
    assert_eq!(b.metrics.handshake_failures("noise"), 1);
    still_working(&mut a, &mut b).await;
    finish(a, b).await;
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped_at_its_deadline() {
    let (mut a, mut b) = setup(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut sock = TcpStream::connect(b.t.local_addr()).await.unwrap();
    assert_eq!(refused(&mut b.events).await, RefuseReason::HandshakeTimeout);
    assert!(socket_closed(&mut sock).await);
    assert_eq!(b.metrics.handshake_failures("timeout"), 1);
    assert_eq!(b.metrics.refused("handshake_timeout"), 1);
    still_working(&mut a, &mut b).await;
    finish(a, b).await;
}

#[tokio::test]
async fn an_unknown_identity_is_refused() {
    let (mut a, mut b) = setup(|_| {}).await;
    let c_cfg = config();
    c_cfg.peers.insert(b.t.address(), b.t.local_addr());
    let mut c = start(Identity::generate(), c_cfg).await;
    c.t.send(b.t.address(), direct(c.t.address(), 1, Bytes::new()))
        .unwrap();
    assert_eq!(
        refused(&mut b.events).await,
        RefuseReason::UnknownPeer(c.t.address())
    );
    // C learns it through the connection closing.
    next_matching(&mut c.events, |ev| match ev {
        Event::ConnectionDown { .. } => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(b.metrics.refused("unknown_peer"), 1);
    still_working(&mut a, &mut b).await;
    c.t.shutdown(Duration::from_secs(5)).await;
    finish(a, b).await;
}

#[tokio::test]
async fn a_dialled_address_proving_another_identity_is_refused() {
    let (mut a, mut b) = setup(|_| {}).await;
    // A believes `wanted` listens where B does.
    let wanted = Identity::generate().address();
    let mut book = std::collections::HashMap::new();
    book.insert(b.t.address(), b.t.local_addr());
    book.insert(wanted, b.t.local_addr());
    a.t.set_peers(book);
    a.t.send(wanted, direct(a.t.address(), 1, Bytes::new()))
        .unwrap();
    let reason = next_matching(&mut a.events, |ev| match ev {
        Event::ConnectionDown { peer, reason, .. } if peer == wanted => Some(reason.to_string()),
        _ => None,
    })
    .await;
    assert!(reason.contains("expected peer"), "{reason}");
    assert_eq!(a.metrics.handshake_failures("wrong_peer"), 1);
    assert_eq!(a.metrics.queue_drops("dial_failed"), 1);
    still_working(&mut a, &mut b).await;
    finish(a, b).await;
}

/// Opens an authenticated session to an open node and lets `f` misbehave on it; returns the
/// node's reason for closing.
async fn misbehave<F, Fut>(label: &'static str, f: F)
where
    F: FnOnce(raw::RawSession) -> Fut,
    Fut: std::future::Future<Output = raw::RawSession>,
{
    let (mut a, mut b) = setup(|c| {
        c.open = true;
        c.max_payload = 1000;
    })
    .await;
    let s = raw::connect(b.t.local_addr(), b.t.address()).await;
    let mut s = f(s).await;
    let reason = conn_error(&mut b.events).await;
    assert!(s.closed_by_peer().await, "{label}: socket left open");
    assert_eq!(b.metrics.frame_errors(label), 1, "{label}: {reason}");
    still_working(&mut a, &mut b).await;
    finish(a, b).await;
}

#[tokio::test]
async fn an_oversized_frame_closes_only_its_connection() {
    misbehave("too_large", |mut s| async move {
        let mut plain = 100_000u32.to_be_bytes().to_vec();
        plain.extend_from_slice(&[0u8; 64]);
        s.send_plain(&plain).await;
        s
    })
    .await;
}

#[tokio::test]
async fn a_truncated_frame_closes_its_connection() {
    misbehave("truncated", |mut s| async move {
        let mut plain = 50u32.to_be_bytes().to_vec();
        plain.extend_from_slice(&[0u8; 10]);
        s.send_plain(&plain).await;
        s.writer.shutdown().await.unwrap();
        s
    })
    .await;
}

#[tokio::test]
async fn a_truncated_noise_message_closes_its_connection() {
    misbehave("truncated", |mut s| async move {
        s.send_raw(&[0, 100, 1, 2, 3]).await;
        s.writer.shutdown().await.unwrap();
        s
    })
    .await;
}

#[tokio::test]
async fn a_forged_noise_message_fails_decryption() {
    misbehave("decrypt", |mut s| async move {
        let mut m = vec![0, 40];
        m.extend_from_slice(&[0x55; 40]);
        s.send_raw(&m).await;
        s
    })
    .await;
}

#[tokio::test]
async fn a_noise_message_shorter_than_its_tag_is_a_bad_length() {
    misbehave("bad_length", |mut s| async move {
        s.send_raw(&[0, 5, 1, 2, 3, 4, 5]).await;
        s
    })
    .await;
}

#[tokio::test]
async fn an_undecodable_message_closes_its_connection() {
    misbehave("decode", |mut s| async move {
        let mut plain = 2u32.to_be_bytes().to_vec();
        plain.extend_from_slice(&[0xff, 0xff]);
        s.send_plain(&plain).await;
        s
    })
    .await;
}

#[tokio::test]
async fn a_valid_message_on_a_raw_session_is_delivered() {
    // The raw client is a faithful implementation: the same bytes minus the bug work.
    let (a, mut b) = setup(|c| c.open = true).await;
    let mut s = raw::connect(b.t.local_addr(), b.t.address()).await;
    let frame = raintree::transport::framing::encode_frame(&Message::Goodbye {
        reason: "bye".into(),
    });
    let direct_frame = raintree::transport::framing::encode_frame(&direct(
        s.identity.address(),
        5,
        Bytes::from_static(b"hi"),
    ));
    let mut plain = direct_frame.to_vec();
    plain.extend_from_slice(&frame);
    s.send_plain(&plain).await;
    let got = recv_directs(&mut b.events, 1).await;
    assert_eq!(got[0], (s.identity.address(), 5, Bytes::from_static(b"hi")));
    s.writer.shutdown().await.unwrap();
    assert!(s.closed_by_peer().await);
    finish(a, b).await;
}

#[tokio::test]
async fn a_connection_flood_past_the_inbound_limit_is_refused_at_once() {
    let (mut a, mut b) = setup(|c| {
        c.max_inbound = 4;
        c.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    // A holds one inbound slot at B; three stalled sockets take the rest.
    let mut socks = Vec::new();
    for _ in 0..10 {
        socks.push(TcpStream::connect(b.t.local_addr()).await.unwrap());
    }
    for _ in 0..7 {
        assert_eq!(refused(&mut b.events).await, RefuseReason::InboundLimit);
    }
    assert_eq!(b.metrics.refused("inbound_limit"), 7);
    // The good peer is unaffected while the slots are taken.
    still_working(&mut a, &mut b).await;
    // The three admitted ones time out; every socket of the flood ends up closed.
    for _ in 0..3 {
        assert_eq!(refused(&mut b.events).await, RefuseReason::HandshakeTimeout);
    }
    for s in socks.iter_mut() {
        assert!(socket_closed(s).await);
    }
    // The slots are free again: a new peer gets in.
    let c_cfg = config();
    c_cfg.peers.insert(b.t.address(), b.t.local_addr());
    let c = start(Identity::generate(), c_cfg).await;
    let mut book: std::collections::HashMap<_, _> = [(a.t.address(), a.t.local_addr())].into();
    book.insert(c.t.address(), c.t.local_addr());
    b.t.set_peers(book);
    c.t.send(b.t.address(), direct(c.t.address(), 1, Bytes::new()))
        .unwrap();
    assert_eq!(recv_directs(&mut b.events, 1).await[0].0, c.t.address());
    c.t.shutdown(Duration::from_secs(5)).await;
    finish(a, b).await;
}

#[tokio::test]
async fn a_handshake_flood_from_one_ip_is_cut_before_any_crypto() {
    let (mut a, mut b) = setup(|c| {
        c.open = true;
        c.handshake_limit = raintree::transport::HandshakeLimit {
            rate: 0.001,
            burst: 4,
            ..Default::default()
        };
    })
    .await;
    // A's connection took one token from 127.0.0.1; three more handshakes fit the burst.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(raw::connect(b.t.local_addr(), b.t.address()).await);
    }
    let mut socks = Vec::new();
    for _ in 0..5 {
        socks.push(TcpStream::connect(b.t.local_addr()).await.unwrap());
    }
    for _ in 0..5 {
        assert_eq!(refused(&mut b.events).await, RefuseReason::RateLimited);
    }
    for s in socks.iter_mut() {
        assert!(socket_closed(s).await);
    }
    assert_eq!(b.metrics.refused("rate_limited"), 5);
    // Refused before the handshake: no handshake failure, no slot taken.
    assert_eq!(b.metrics.handshake_failures("timeout"), 0);
    assert_eq!(b.metrics.handshake_failures("noise"), 0);
    assert_eq!(b.metrics.connections_opened("inbound"), 4);
    // Established connections are not affected.
    still_working(&mut a, &mut b).await;
    drop(socks);
    drop(sessions);
    finish(a, b).await;
}
