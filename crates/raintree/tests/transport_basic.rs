//! One connection end to end: handshake, framing, delivery in order, large frames, requests.

mod transport_util;

use std::time::Duration;

use bytes::Bytes;
use raintree::proto::wire::Message;
use raintree::transport::{Event, RequestError, SendError};
use transport_util::*;

#[tokio::test]
async fn messages_arrive_in_order_over_one_connection() {
    let mut nodes = mesh(2, |_| {}).await;
    let (a, b) = (nodes[0].t.clone(), nodes[1].t.address());
    for i in 0..200u64 {
        a.send(b, direct(a.address(), i, Bytes::from(vec![i as u8; 100])))
            .unwrap();
    }
    let got = recv_directs(&mut nodes[1].events, 200).await;
    for (i, (peer, nonce, payload)) in got.into_iter().enumerate() {
        assert_eq!(peer, a.address());
        assert_eq!(nonce, i as u64);
        assert_eq!(payload.len(), 100);
        assert!(payload.iter().all(|x| *x == i as u8));
    }
    // Pooled: 200 sends used exactly one connection.
    assert_eq!(nodes[0].metrics.connections_opened("outbound"), 1);
    assert_eq!(nodes[1].metrics.connections_opened("inbound"), 1);
    assert_eq!(nodes[0].metrics.frames_sent("direct"), 200);
    let mut registry = prometheus_client::registry::Registry::default();
    nodes[0].metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("raintree_transport_frames_sent_total{kind=\"direct\"} 200"),
        "{text}"
    );
    assert!(text.contains("raintree_transport_bytes_sent_total{kind=\"direct\"}"));
    assert!(text.contains("raintree_transport_open_connections{direction=\"outbound\"} 1"));
    for n in &nodes {
        n.t.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn large_frames_span_many_noise_messages() {
    let mut nodes = mesh(2, |_| {}).await;
    let (a, b) = (nodes[0].t.clone(), nodes[1].t.address());
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let big = Bytes::from(big);
    a.send(b, direct(a.address(), 1, big.clone())).unwrap();
    a.send(b, direct(a.address(), 2, Bytes::from_static(b"after")))
        .unwrap();
    let got = recv_directs(&mut nodes[1].events, 2).await;
    assert_eq!(got[0].2, big);
    assert_eq!(&got[1].2[..], b"after");
    for n in &nodes {
        n.t.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn mixed_sizes_arrive_intact_across_reads() {
    let mut nodes = mesh(2, |_| {}).await;
    let (a, b) = (nodes[0].t.clone(), nodes[1].t.address());
    // Sizes from empty to several Noise messages, so frames straddle Noise messages and reads,
    // in two rounds so the second starts after the reader has drained everything.
    let size = |i: u64| ((i * 7919) % 150_000) as usize * (i % 3) as usize / 2;
    let body = |i: u64| {
        Bytes::from(
            (0..size(i))
                .map(|j| (j as u64 + i) as u8)
                .collect::<Vec<_>>(),
        )
    };
    for round in 0..2u64 {
        for i in round * 300..(round + 1) * 300 {
            a.send(b, direct(a.address(), i, body(i))).unwrap();
        }
        let got = recv_directs(&mut nodes[1].events, 300).await;
        for (k, (_, nonce, payload)) in got.into_iter().enumerate() {
            let i = round * 300 + k as u64;
            assert_eq!(nonce, i);
            assert_eq!(payload, body(i), "message {i}");
        }
    }
    for n in &nodes {
        n.t.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn payload_over_limit_fails_at_the_sender() {
    let nodes = mesh(2, |c| c.max_payload = 1000).await;
    let (a, b) = (&nodes[0].t, nodes[1].t.address());
    let err = a
        .send(b, direct(a.address(), 1, Bytes::from(vec![0; 1001])))
        .unwrap_err();
    assert_eq!(
        err,
        SendError::PayloadTooLarge {
            len: 1001,
            max: 1000
        }
    );
    assert_eq!(nodes[0].metrics.queue_drops("payload_too_large"), 1);
    // Nothing was dialled for it.
    assert_eq!(nodes[0].metrics.connections_opened("outbound"), 0);
    let unknown = raintree::transport::Identity::generate().address();
    assert_eq!(
        a.send(unknown, direct(a.address(), 1, Bytes::new())),
        Err(SendError::UnknownPeer(unknown))
    );
    for n in &nodes {
        n.t.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn request_gets_its_response_or_times_out() {
    let mut nodes = mesh(2, |_| {}).await;
    let b_events = std::mem::replace(&mut nodes[1].events, {
        // A placeholder never read: node 1's events go to the echo task.
        let n = start(raintree::transport::Identity::generate(), config()).await;
        n.events
    });
    let echo = spawn_echo(b_events);
    let (a, b) = (nodes[0].t.clone(), nodes[1].t.address());
    let r = a
        .request(b, Bytes::from_static(b"abc"), WAIT)
        .await
        .unwrap();
    assert_eq!(&r[..], b"cba");
    assert_eq!(nodes[0].metrics.requests("ok"), 1);
    // Node 0 does not answer requests (nobody responds on its stream): B's request times out.
    let err = nodes[1]
        .t
        .request(
            a.address(),
            Bytes::from_static(b"x"),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert_eq!(err, RequestError::Timeout);
    let req = next_matching(&mut nodes[0].events, |ev| match ev {
        Event::Request { payload, .. } => Some(payload),
        _ => None,
    })
    .await;
    assert_eq!(&req[..], b"x");
    for n in &nodes {
        n.t.shutdown(Duration::from_secs(5)).await;
    }
    echo.abort();
}

#[tokio::test]
async fn control_messages_are_delivered() {
    let mut nodes = mesh(2, |_| {}).await;
    let (a, b) = (nodes[0].t.clone(), nodes[1].t.address());
    let id = raintree::proto::MessageId {
        origin: a.address(),
        nonce: 7,
    };
    a.write(
        b,
        Message::Ack {
            id,
            level_or_range: 3,
        },
    );
    let m = next_matching(&mut nodes[1].events, |ev| match ev {
        Event::Message { message, .. } => Some(message),
        _ => None,
    })
    .await;
    assert_eq!(
        m,
        Message::Ack {
            id,
            level_or_range: 3
        }
    );
    for n in &nodes {
        n.t.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn transport_owned_kinds_are_refused_from_the_application() {
    let mut nodes = mesh(2, |_| {}).await;
    let (a, b) = (nodes[0].t.clone(), nodes[1].t.address());
    let reserved = [
        Message::Goodbye {
            reason: "forged".into(),
        },
        Message::Request {
            id: 1,
            payload: Bytes::new(),
        },
        Message::Response {
            id: 1,
            payload: Bytes::new(),
        },
    ];
    for m in reserved.clone() {
        let kind = m.kind();
        assert_eq!(a.send(b, m), Err(SendError::Reserved(kind)));
    }
    for m in reserved {
        a.write(b, m);
    }
    assert_eq!(nodes[0].metrics.queue_drops("reserved"), 6);
    // The connection is untouched: an ordinary message still flows.
    a.send(b, direct(a.address(), 7, Bytes::from_static(b"ok")))
        .unwrap();
    let got = recv_directs(&mut nodes[1].events, 1).await;
    assert_eq!(got[0].1, 7);
}
