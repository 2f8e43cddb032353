//! Memory bounds in bytes: the global queue budget across peers and the event channel's byte
//! budget towards the application.

mod transport_util;

use std::time::Duration;

use bytes::Bytes;
use raintree::transport::{Event, Identity, SendError};
use transport_util::*;

#[tokio::test]
async fn the_total_queue_budget_bounds_all_peers_together() {
    // A listener that never answers: dials to it wait in the handshake, so sends pile up.
    let silent = std::net::TcpListener::bind(loopback()).unwrap();
    let (p1, p2) = (
        Identity::generate().address(),
        Identity::generate().address(),
    );
    let mut cfg = config();
    cfg.queue_bytes = 10_000;
    cfg.total_queue_bytes = 12_000;
    cfg.handshake_timeout = Duration::from_millis(300);
    cfg.peers = [
        (p1, silent.local_addr().unwrap()),
        (p2, silent.local_addr().unwrap()),
    ]
    .into();
    let mut a = start(Identity::generate(), cfg).await;
    let me = a.t.address();
    let block = || Bytes::from(vec![7u8; 4000]);
    a.t.send(p1, direct(me, 1, block())).unwrap();
    a.t.send(p1, direct(me, 2, block())).unwrap();
    assert_eq!(a.t.queued_bytes(), 2 * (4000 + 64));
    // P2's own queue is empty, but all queues together are at the limit.
    let r = a.t.send(p2, direct(me, 3, block()));
    assert_eq!(
        r,
        Err(SendError::TotalQueueFull {
            used: 2 * 4064,
            limit: 12_000
        })
    );
    assert_eq!(a.metrics.queue_drops("total_queue_full"), 1);
    // Small control-sized messages still fit the remainder.
    a.t.send(p2, direct(me, 4, Bytes::from_static(b"x")))
        .unwrap();
    // P1's dial times out and its queue is dropped: the bytes return to the budget.
    let _ = next_matching(&mut a.events, |ev| match ev {
        Event::ConnectionDown { peer, .. } if peer == p1 => Some(()),
        _ => None,
    })
    .await;
    a.t.send(p2, direct(me, 5, block())).unwrap();
    assert!(a.t.queued_bytes() <= 12_000);
    a.t.shutdown(Duration::from_secs(1)).await;
    assert_eq!(a.t.queued_bytes(), 0);
}

/// Waits (yielding, never sleeping) until `f` holds; panics after [`WAIT`].
async fn until(mut f: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !f() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("condition never held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_message_events_are_bounded_in_bytes() {
    let mut nodes = mesh(2, |c| c.event_bytes = 10_000).await;
    let mut b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let me = a.t.address();
    for n in 0..5 {
        a.t.send(b.t.address(), direct(me, n, Bytes::from(vec![1u8; 4000])))
            .unwrap();
    }
    // B's reader has decoded a third message but holds it: two (8,000 bytes) are unread and a
    // third would pass the 10,000-byte budget. Without the budget all five would be queued.
    // (The waiting reader already holds the last 2,000 bytes of the budget.)
    until(|| b.metrics.frames_received("direct") >= 3).await;
    until(|| b.t.event_bytes_in_flight() == 10_000).await;
    tokio::task::yield_now().await;
    // ConnectionUp and two messages.
    assert_eq!(b.events.len(), 3);
    // Reading frees the budget and the rest follow, in order.
    let got = recv_directs(&mut b.events, 5).await;
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(b.t.event_bytes_in_flight(), 0);
    a.t.shutdown(Duration::from_secs(1)).await;
    b.t.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_event_larger_than_the_budget_still_passes_alone() {
    let mut nodes = mesh(2, |c| c.event_bytes = 1000).await;
    let mut b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let me = a.t.address();
    for n in 0..3 {
        a.t.send(b.t.address(), direct(me, n, Bytes::from(vec![1u8; 5000])))
            .unwrap();
    }
    let got = recv_directs(&mut b.events, 3).await;
    assert!(got.iter().all(|g| g.2.len() == 5000));
    a.t.shutdown(Duration::from_secs(1)).await;
    b.t.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn dropping_the_event_stream_never_wedges_readers() {
    let mut nodes = mesh(2, |c| c.event_bytes = 1000).await;
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    drop(b.events);
    let me = a.t.address();
    for n in 0..10 {
        a.t.send(b.t.address(), direct(me, n, Bytes::from(vec![1u8; 800])))
            .unwrap();
    }
    // B's reader keeps draining the socket (nothing is read by anyone), so A's queue empties
    // and both shut down cleanly.
    until(|| b.metrics.frames_received("direct") == 10).await;
    assert!(!a.t.shutdown(Duration::from_secs(5)).await.forced);
    assert!(!b.t.shutdown(Duration::from_secs(5)).await.forced);
}
