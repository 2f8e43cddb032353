//! Every socket is closed: the process's open file descriptors return to their baseline after
//! each scenario. The scenarios run one at a time (a static lock) because they count the
//! whole process's descriptors, and each builds its own runtime inside the measurement.

mod transport_util;

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use raintree::transport::{Event, Identity};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use transport_util::raw::{self, socket_closed};
use transport_util::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn with_fd_check<F: Future<Output = ()>>(scenario: impl FnOnce() -> F) {
    let _guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    // Tokio's signal driver opens a process-wide socket pair once, on first use: do that
    // before the baseline so it is not mistaken for a leak.
    drop(runtime());
    let rt = runtime();
    // Measured inside the runtime: a socket left to the runtime's teardown counts as leaked.
    let (before, after) = rt.block_on(async {
        let before = fd_count();
        scenario().await;
        (before, fd_count())
    });
    if after != before {
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            eprintln!(
                "fd {:?} -> {:?}",
                e.file_name(),
                std::fs::read_link(e.path())
            );
        }
    }
    drop(rt);
    assert_eq!(after, before, "file descriptors leaked");
}

#[test]
fn mesh_traffic_and_shutdown_close_every_socket() {
    with_fd_check(|| async {
        let nodes = mesh(4, |_| {}).await;
        let addrs: Vec<_> = nodes.iter().map(|n| n.t.address()).collect();
        let mut nodes = nodes;
        for n in &nodes {
            for to in addrs.iter().filter(|a| **a != n.t.address()) {
                for i in 0..20 {
                    n.t.send(*to, direct(n.t.address(), i, Bytes::from_static(b"x")))
                        .unwrap();
                }
            }
        }
        for n in nodes.iter_mut() {
            recv_directs(&mut n.events, 60).await;
        }
        for n in &nodes {
            let r = n.t.shutdown(Duration::from_secs(5)).await;
            assert!(!r.forced, "{r:?}");
        }
    });
}

#[test]
fn refused_and_broken_connections_close_their_sockets() {
    with_fd_check(|| async {
        let mut cfg = config();
        cfg.max_inbound = 3;
        cfg.open = true;
        cfg.max_payload = 1000;
        cfg.handshake_timeout = Duration::from_millis(300);
        let mut b = start(Identity::generate(), cfg).await;
        // A flood past the limit, some sending garbage, the rest stalling.
        let mut socks = Vec::new();
        for i in 0..8 {
            let mut s = TcpStream::connect(b.t.local_addr()).await.unwrap();
            if i % 2 == 0 {
                let _ = s.write_all(b"\x00\x05garbage").await;
            }
            socks.push(s);
        }
        for s in socks.iter_mut() {
            assert!(socket_closed(s).await);
        }
        drop(socks);
        // An authenticated session that then sends an oversized frame.
        let mut s = raw::connect(b.t.local_addr(), b.t.address()).await;
        let mut plain = 1_000_000u32.to_be_bytes().to_vec();
        plain.extend_from_slice(&[0; 16]);
        s.send_plain(&plain).await;
        assert!(s.closed_by_peer().await);
        drop(s);
        next_matching(&mut b.events, |ev| match ev {
            Event::ConnectionDown { .. } => Some(()),
            _ => None,
        })
        .await;
        assert_eq!(b.metrics.frame_errors("too_large"), 1);
        assert!(!b.t.shutdown(Duration::from_secs(5)).await.forced);
    });
}

#[test]
fn idle_close_redial_and_failed_dials_close_their_sockets() {
    with_fd_check(|| async {
        let mut nodes = mesh(2, |c| {
            c.idle_timeout = Duration::from_millis(150);
            c.dial_backoff = Duration::from_millis(10);
        })
        .await;
        let (a, b) = (nodes[0].t.clone(), nodes[1].t.address());
        for round in 0..3 {
            a.send(b, direct(a.address(), round, Bytes::new())).unwrap();
            recv_directs(&mut nodes[1].events, 1).await;
            next_matching(&mut nodes[0].events, |ev| match ev {
                Event::ConnectionDown { .. } => Some(()),
                _ => None,
            })
            .await;
        }
        // A dial to a port nobody listens on.
        let ghost = Identity::generate().address();
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut book: std::collections::HashMap<_, _> = [(b, nodes[1].t.local_addr())].into();
        book.insert(ghost, closed_port);
        a.set_peers(book);
        a.send(ghost, direct(a.address(), 9, Bytes::new())).unwrap();
        next_matching(&mut nodes[0].events, |ev| match ev {
            Event::ConnectionDown { peer, .. } if peer == ghost => Some(()),
            _ => None,
        })
        .await;
        for n in &nodes {
            assert!(!n.t.shutdown(Duration::from_secs(5)).await.forced);
        }
    });
}

#[test]
fn bans_and_rate_limited_connections_close_every_socket() {
    with_fd_check(|| async {
        let mut cfg = config();
        cfg.open = true;
        cfg.score.ban_threshold = 50.0;
        cfg.handshake_limit = raintree::transport::HandshakeLimit {
            rate: 0.001,
            burst: 3,
            ..Default::default()
        };
        let mut b = start(Identity::generate(), cfg).await;
        let bad = Identity::generate();
        // Two malformed frames ban the peer; its third handshake is refused.
        for _ in 0..3 {
            let mut s = raw::connect_as(bad.clone(), b.t.local_addr(), b.t.address()).await;
            let mut plain = 2u32.to_be_bytes().to_vec();
            plain.extend_from_slice(&[0xff, 0xff]);
            s.send_plain(&plain).await;
            assert!(s.closed_by_peer().await);
        }
        assert!(b.t.is_banned(bad.address()));
        assert_eq!(b.metrics.refused("banned"), 1);
        // The token bucket is empty now: plain sockets are closed on accept.
        for _ in 0..3 {
            let mut sock = TcpStream::connect(b.t.local_addr()).await.unwrap();
            assert!(socket_closed(&mut sock).await);
        }
        next_matching(&mut b.events, |ev| match ev {
            Event::Refused { reason, .. } if reason.label() == "rate_limited" => Some(()),
            _ => None,
        })
        .await;
        assert_eq!(b.metrics.refused("rate_limited"), 3);
        assert!(!b.t.shutdown(Duration::from_secs(5)).await.forced);
    });
}
