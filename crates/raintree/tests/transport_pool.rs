//! The pool under concurrency: many peers both ways, simultaneous dials, requests under load,
//! graceful shutdown, idle close, redial, peer removal, the owner's peer book, open mode.

mod transport_util;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use raintree::proto::wire::Message;
use raintree::transport::{CloseReason, Event, Identity, PeerBook, RequestError, SendError};
use transport_util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_peers_exchange_in_both_directions_at_once() {
    const N: usize = 6;
    const PER_PEER: u64 = 100;
    let nodes = mesh(N, |_| {}).await;
    let addrs: Vec<_> = nodes.iter().map(|n| n.t.address()).collect();
    let mut receivers = Vec::new();
    let mut handles = Vec::new();
    for node in nodes {
        let TestNode {
            t,
            mut events,
            metrics,
            ..
        } = node;
        receivers.push(tokio::spawn(async move {
            let got = recv_directs(&mut events, (N - 1) * PER_PEER as usize).await;
            (got, events, metrics)
        }));
        handles.push(t);
    }
    // Every node sends to every other concurrently, so many dials cross.
    let mut senders = Vec::new();
    for t in &handles {
        let t = t.clone();
        let addrs = addrs.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..PER_PEER {
                for to in addrs.iter().filter(|a| **a != t.address()) {
                    t.send(*to, direct(t.address(), i, Bytes::from(vec![1; 512])))
                        .unwrap();
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    for (idx, r) in receivers.into_iter().enumerate() {
        let (got, _events, metrics) = r.await.unwrap();
        // Each message exactly once. (Order holds per connection; across a
        // simultaneous-dial swap the tail of the old connection may interleave with the new.)
        let mut seen: HashMap<_, std::collections::HashSet<u64>> = HashMap::new();
        for (peer, nonce, _) in got {
            assert!(
                seen.entry(peer).or_default().insert(nonce),
                "node {idx}: duplicate"
            );
        }
        assert_eq!(seen.len(), N - 1);
        assert!(seen.values().all(|s| s.len() == PER_PEER as usize));
        assert_eq!(metrics.queue_drops("connection_lost"), 0);
    }
    for t in &handles {
        let report = t.shutdown(Duration::from_secs(5)).await;
        assert!(!report.forced);
    }
}

#[tokio::test]
async fn simultaneous_dial_ends_with_one_connection_dialled_by_the_lower_address() {
    let mut nodes = mesh(2, |_| {}).await;
    nodes.sort_by_key(|n| n.t.address());
    let (lo, hi) = (nodes[0].t.clone(), nodes[1].t.clone());
    // Both dial before either handshake can finish.
    for i in 0..50u64 {
        lo.write(
            hi.address(),
            direct(lo.address(), i, Bytes::from_static(b"l")),
        );
        hi.write(
            lo.address(),
            direct(hi.address(), i, Bytes::from_static(b"h")),
        );
    }
    let (n0, n1) = nodes.split_at_mut(1);
    let (got_hi, got_lo) = tokio::join!(
        recv_directs(&mut n1[0].events, 50),
        recv_directs(&mut n0[0].events, 50)
    );
    for got in [&got_hi, &got_lo] {
        let mut nonces: Vec<u64> = got.iter().map(|m| m.1).collect();
        nonces.sort_unstable();
        assert_eq!(nonces, (0..50).collect::<Vec<_>>());
    }
    assert_eq!(nodes[0].metrics.connections_opened("outbound"), 1);
    assert_eq!(nodes[1].metrics.connections_opened("outbound"), 1);
    // The connection dialled by the higher address closes on both sides.
    for n in nodes.iter_mut() {
        let reason = next_matching(&mut n.events, |ev| match ev {
            Event::ConnectionDown { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .await;
        assert!(
            reason.ends_with("duplicate") || reason.ends_with("replaced"),
            "{reason}"
        );
    }
    assert_eq!(nodes[0].metrics.open_connections("outbound"), 1);
    assert_eq!(nodes[0].metrics.open_connections("inbound"), 0);
    assert_eq!(nodes[1].metrics.open_connections("inbound"), 1);
    assert_eq!(nodes[1].metrics.open_connections("outbound"), 0);
    // Later sends reuse the survivor both ways.
    lo.send(hi.address(), direct(lo.address(), 99, Bytes::new()))
        .unwrap();
    hi.send(lo.address(), direct(hi.address(), 99, Bytes::new()))
        .unwrap();
    assert_eq!(recv_directs(&mut nodes[1].events, 1).await[0].1, 99);
    assert_eq!(recv_directs(&mut nodes[0].events, 1).await[0].1, 99);
    assert_eq!(nodes[0].metrics.connections_opened("outbound"), 1);
    assert_eq!(nodes[1].metrics.connections_opened("outbound"), 1);
    for n in &nodes {
        n.t.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_complete_under_bulk_load() {
    let mut nodes = mesh(2, |_| {}).await;
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let echo = spawn_echo(b.events);
    let bulk = {
        let t = a.t.clone();
        let to = b.t.address();
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![7u8; 16 * 1024]);
            for i in 0..300 {
                // Full queues are fine here: the point is load on the same connection.
                let _ = t.send(to, direct(t.address(), i, chunk.clone()));
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut reqs = Vec::new();
    for i in 0..200u32 {
        let t = a.t.clone();
        let to = b.t.address();
        reqs.push(tokio::spawn(async move {
            let body = Bytes::from(i.to_be_bytes().to_vec());
            let r = t.request(to, body, WAIT).await.unwrap();
            let mut want = i.to_be_bytes();
            want.reverse();
            assert_eq!(&r[..], &want);
        }));
    }
    for r in reqs {
        r.await.unwrap();
    }
    bulk.await.unwrap();
    assert_eq!(a.metrics.requests("ok"), 200);
    assert_eq!(a.metrics.connections_opened("outbound"), 1);
    a.t.shutdown(Duration::from_secs(5)).await;
    b.t.shutdown(Duration::from_secs(5)).await;
    echo.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_everything_queued_before_it() {
    let mut nodes = mesh(2, |_| {}).await;
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    const N: usize = 2000;
    let to = b.t.address();
    let mut events = b.events;
    let reader = tokio::spawn(async move {
        let got = recv_directs(&mut events, N).await;
        let bye = next_matching(&mut events, |ev| match ev {
            Event::ConnectionDown { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .await;
        (got, bye)
    });
    for i in 0..N as u64 {
        a.t.send(to, direct(a.t.address(), i, Bytes::from(vec![3; 4096])))
            .unwrap();
    }
    // Nothing has necessarily reached the wire yet (the dial may still be running).
    let report = a.t.shutdown(Duration::from_secs(10)).await;
    assert!(report.drained, "{report:?}");
    assert_eq!(report.dropped, 0);
    assert!(!report.forced);
    let (got, bye) = reader.await.unwrap();
    assert_eq!(got.len(), N);
    assert!(got.iter().enumerate().all(|(i, m)| m.1 == i as u64));
    assert_eq!(bye, "goodbye: shutdown");
    assert_eq!(a.metrics.frames_sent("goodbye"), 1);
    // Refused once shut down.
    assert_eq!(
        a.t.send(to, direct(a.t.address(), 0, Bytes::new())),
        Err(SendError::Shutdown)
    );
    assert_eq!(
        a.t.request(to, Bytes::new(), WAIT).await,
        Err(RequestError::Shutdown)
    );
    b.t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn idle_connections_close_and_the_next_send_redials() {
    let mut nodes = mesh(2, |c| c.idle_timeout = Duration::from_millis(200)).await;
    let (a, b) = (nodes[0].t.clone(), nodes[1].t.address());
    a.send(b, direct(a.address(), 1, Bytes::new())).unwrap();
    recv_directs(&mut nodes[1].events, 1).await;
    let reason = next_matching(&mut nodes[0].events, |ev| match ev {
        Event::ConnectionDown { reason, .. } => Some(reason.to_string()),
        _ => None,
    })
    .await;
    assert!(reason.contains("idle"), "{reason}");
    assert_eq!(nodes[0].metrics.open_connections("outbound"), 0);
    a.send(b, direct(a.address(), 2, Bytes::new())).unwrap();
    assert_eq!(recv_directs(&mut nodes[1].events, 1).await[0].1, 2);
    assert_eq!(nodes[0].metrics.connections_opened("outbound"), 2);
    for n in &nodes {
        n.t.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_lost_peer_is_redialled_after_backoff() {
    let mut nodes = mesh(2, |c| c.dial_backoff = Duration::from_millis(100)).await;
    let b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    let b_id = b.identity.clone();
    a.t.send(b.t.address(), direct(a.t.address(), 1, Bytes::new()))
        .unwrap();
    let mut b_events = b.events;
    recv_directs(&mut b_events, 1).await;
    b.t.shutdown(Duration::from_secs(5)).await;
    next_matching(&mut a.events, |ev| match ev {
        Event::ConnectionDown { .. } => Some(()),
        _ => None,
    })
    .await;
    // B is gone: this send's dial fails and the message is dropped, counted.
    a.t.send(b.t.address(), direct(a.t.address(), 2, Bytes::new()))
        .unwrap();
    let reason = next_matching(&mut a.events, |ev| match ev {
        Event::ConnectionDown { reason, .. } => Some(reason.to_string()),
        _ => None,
    })
    .await;
    assert!(reason.starts_with("dial failed"), "{reason}");
    assert_eq!(a.metrics.queue_drops("dial_failed"), 1);
    // B comes back elsewhere with the same identity.
    let cfg = config();
    cfg.peers.insert(a.t.address(), a.t.local_addr());
    let mut b2 = start(b_id, cfg).await;
    a.t.set_peers([(b2.t.address(), b2.t.local_addr())].into());
    a.t.send(b2.t.address(), direct(a.t.address(), 3, Bytes::new()))
        .unwrap();
    assert_eq!(recv_directs(&mut b2.events, 1).await[0].1, 3);
    a.t.shutdown(Duration::from_secs(5)).await;
    b2.t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn removing_a_peer_closes_its_connection() {
    let mut nodes = mesh(2, |_| {}).await;
    let (a, b) = (nodes[0].t.clone(), nodes[1].t.address());
    a.send(b, direct(a.address(), 1, Bytes::new())).unwrap();
    recv_directs(&mut nodes[1].events, 1).await;
    a.set_peers(HashMap::new());
    let reason = next_matching(&mut nodes[1].events, |ev| match ev {
        Event::ConnectionDown { reason, .. } => Some(reason.to_string()),
        _ => None,
    })
    .await;
    assert!(reason.starts_with("goodbye"), "{reason}");
    assert_eq!(
        a.send(b, direct(a.address(), 2, Bytes::new())),
        Err(SendError::UnknownPeer(b))
    );
    for n in &nodes {
        n.t.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn the_transport_reads_its_owner_s_book_and_closes_removed_peers_when_told() {
    let book = PeerBook::new();
    let mut cfg = config();
    cfg.peers = book.clone();
    let a = start(Identity::generate(), cfg).await;
    let mut b = start(Identity::generate(), config()).await;
    b.t.set_peers([(a.t.address(), a.t.local_addr())].into());
    let (me, to) = (a.t.address(), b.t.address());
    assert_eq!(
        a.t.send(to, direct(me, 1, Bytes::new())),
        Err(SendError::UnknownPeer(to))
    );
    // No copy to refresh: the owner's insert is what the next send sees.
    book.insert(to, b.t.local_addr());
    a.t.send(to, direct(me, 2, Bytes::new())).unwrap();
    assert_eq!(recv_directs(&mut b.events, 1).await[0].1, 2);
    // Listed again by the time the transport hears of the removal: the connection stays.
    book.remove(&to);
    book.insert(to, b.t.local_addr());
    a.t.peers_removed(&[to]);
    a.t.send(to, direct(me, 3, Bytes::new())).unwrap();
    assert_eq!(recv_directs(&mut b.events, 1).await[0].1, 3);
    assert_eq!(a.metrics.connections_opened("outbound"), 1);
    book.remove(&to);
    a.t.peers_removed(&[to]);
    let reason = next_matching(&mut b.events, |ev| match ev {
        Event::ConnectionDown { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, CloseReason::Goodbye("peer removed".into()));
    assert!(!reason.peer_lost());
    assert_eq!(
        a.t.send(to, direct(me, 4, Bytes::new())),
        Err(SendError::UnknownPeer(to))
    );
    a.t.shutdown(Duration::from_secs(5)).await;
    b.t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_open_node_accepts_strangers_and_answers_over_their_connection() {
    let mut server_cfg = config();
    server_cfg.open = true;
    let mut server = start(Identity::generate(), server_cfg).await;
    let cfg = config();
    cfg.peers.insert(server.t.address(), server.t.local_addr());
    let mut client = start(Identity::generate(), cfg).await;
    client
        .t
        .send(
            server.t.address(),
            direct(client.t.address(), 1, Bytes::new()),
        )
        .unwrap();
    let got = recv_directs(&mut server.events, 1).await;
    assert_eq!(got[0].0, client.t.address());
    // The server does not know where the client listens, yet replies over the pooled connection.
    server
        .t
        .send(
            client.t.address(),
            direct(server.t.address(), 2, Bytes::new()),
        )
        .unwrap();
    assert_eq!(recv_directs(&mut client.events, 1).await[0].1, 2);
    assert_eq!(client.metrics.connections_opened("inbound"), 0);
    let _ = Message::Goodbye {
        reason: String::new(),
    };
    client.t.shutdown(Duration::from_secs(5)).await;
    server.t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_peer_fills_only_its_own_queue() {
    let mut b_cfg = config();
    b_cfg.open = true;
    b_cfg.queue_bytes = 2 * 1024 * 1024;
    let mut b = start(Identity::generate(), b_cfg).await;
    let a_cfg = config();
    a_cfg.peers.insert(b.t.address(), b.t.local_addr());
    let mut a = start(Identity::generate(), a_cfg).await;
    b.t.set_peers([(a.t.address(), a.t.local_addr())].into());
    // A raw peer that completes the handshake, then never reads.
    let stalled = transport_util::raw::connect(b.t.local_addr(), b.t.address()).await;
    let s_addr = stalled.identity.address();
    next_matching(&mut b.events, |ev| match ev {
        Event::ConnectionUp { peer, .. } if peer == s_addr => Some(()),
        _ => None,
    })
    .await;
    let chunk = Bytes::from(vec![1u8; 64 * 1024]);
    let mut full = false;
    for i in 0..100_000u64 {
        match b.t.send(s_addr, direct(b.t.address(), i, chunk.clone())) {
            Ok(()) => {}
            Err(SendError::QueueFull { .. }) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(full, "the stalled peer's queue never filled");
    assert_eq!(b.metrics.queue_drops("queue_full"), 1);
    // Meanwhile B's traffic with A flows both ways.
    for i in 0..20 {
        b.t.send(a.t.address(), direct(b.t.address(), i, chunk.clone()))
            .unwrap();
    }
    assert_eq!(recv_directs(&mut a.events, 20).await.len(), 20);
    a.t.send(b.t.address(), direct(a.t.address(), 1, Bytes::new()))
        .unwrap();
    next_matching(&mut b.events, |ev| match ev {
        Event::Message { peer, .. } if peer == a.t.address() => Some(()),
        _ => None,
    })
    .await;
    // Shutdown cannot drain the stalled queue: it gives up at the deadline and reports it.
    let report = b.t.shutdown(Duration::from_millis(300)).await;
    assert!(report.forced, "{report:?}");
    assert!(!report.drained);
    assert!(report.elapsed < Duration::from_secs(2), "{report:?}");
    drop(stalled);
    a.t.shutdown(Duration::from_secs(5)).await;
}
