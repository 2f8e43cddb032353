//! The full node (transport, driver, engine) in a deterministic simulated network (turmoil):
//! properties that need WAN latency, partitions, crashes or exact timing, which loopback
//! sockets cannot give. Time here is simulated: every duration below is exact, not a sleep.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use raintree::node::{Node, NodeConfig, NodeStreams};
use raintree::proto::broadcast::Config;
use raintree::proto::wire::Strategy;
use raintree::wan::{self, host_name};

const SEED: u64 = 11;

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

async fn sleep_until(at: Duration) {
    let t = now();
    if at > t {
        tokio::time::sleep(at - t).await;
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A fixed ACK deadline (no adaptation), so the test knows to the tick when it is due.
fn fixed_deadline(d: Duration) -> Config {
    Config {
        strategy: Strategy::Exact,
        ack_timeout: d,
        min_ack_timeout: d,
        max_ack_timeout: d,
        ..Config::default()
    }
}

fn sim(latency: Duration, limit: Duration) -> turmoil::Sim<'static> {
    wan::builder(latency, Duration::ZERO, SEED, limit).build()
}

async fn start(
    i: usize,
    n: usize,
    protocol: &Config,
    tweak: impl FnOnce(&mut NodeConfig),
) -> (Node, NodeStreams) {
    let mut cfg = wan::node_config(SEED, i, n, protocol);
    tweak(&mut cfg);
    Node::start(cfg).await.expect("node starts")
}

fn address(i: usize) -> raintree::proto::Address {
    wan::identity(SEED, i).address()
}

/// Host n0 of two: half a second in, broadcasts `count` payloads of `size` bytes, then idles.
fn broadcaster(sim: &mut turmoil::Sim<'static>, protocol: &Config, count: u64, size: usize) {
    let protocol = protocol.clone();
    sim.host(host_name(0), move || {
        let protocol = protocol.clone();
        async move {
            let (node, _streams) = start(0, 2, &protocol, |_| {}).await;
            sleep_until(ms(500)).await;
            for k in 0..count {
                node.broadcast(Bytes::from(vec![k as u8; size])).await?;
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

/// Records when the node's counters first satisfy `f`.
async fn when(node: &Node, f: impl Fn(&raintree::proto::broadcast::Stats) -> bool) -> Duration {
    let mut w = node.stats_watch();
    w.wait_for(|s| f(s)).await.expect("node running");
    now()
}

#[test]
fn ack_deadline_fires_on_time_under_a_continuous_stream_of_events() {
    // A (n0) broadcasts to B (n1) and X (n2). The A-X link is held, so X's ACK can only time
    // out, while B floods A with direct messages every millisecond throughout.
    let deadline = ms(300);
    let protocol = fixed_deadline(deadline);
    let mut sim = sim(ms(20), Duration::from_secs(10));
    let out = Rc::new(RefCell::new(None));
    for i in 1..3 {
        let protocol = protocol.clone();
        sim.host(host_name(i), move || {
            let protocol = protocol.clone();
            async move {
                let (node, mut streams) = start(i, 3, &protocol, |_| {}).await;
                if i == 1 {
                    sleep_until(ms(300)).await;
                    loop {
                        for _ in 0..20 {
                            let _ = node.send(address(0), Bytes::from_static(b"noise"));
                        }
                        tokio::time::sleep(ms(1)).await;
                    }
                }
                while streams.deliveries.recv().await.is_some() {}
                Ok(())
            }
        });
    }
    let result = Rc::clone(&out);
    sim.client(host_name(0), async move {
        let (node, mut streams) = start(0, 3, &protocol, |_| {}).await;
        // Connections to both peers first, so the deadline below is the only thing pending.
        node.send(address(2), Bytes::from_static(b"hello"))?;
        sleep_until(ms(500)).await;
        turmoil::hold(host_name(0), host_name(2));
        let flood = tokio::task::spawn_local(async move {
            let mut n = 0u64;
            while streams.deliveries.recv().await.is_some() {
                n += 1;
            }
            n
        });
        sleep_until(ms(800)).await;
        let sent = now();
        let busy_before = node.stats().deliveries;
        node.broadcast(Bytes::from_static(b"x")).await?;
        let fired = when(&node, |s| s.ack_timeouts >= 1).await;
        let busy_after = node.stats().deliveries;
        *result.borrow_mut() = Some((sent, fired, busy_before, busy_after));
        node.shutdown(ms(100)).await;
        flood.abort();
        Ok(())
    });
    sim.run().expect("simulation");
    let (sent, fired, before, after) = out.borrow().expect("measured");
    assert!(
        before > 1000,
        "the flood was running before the broadcast ({before})"
    );
    assert!(
        after - before > 500,
        "and during the deadline ({})",
        after - before
    );
    let late = fired - sent - deadline;
    assert!(late <= ms(2), "deadline handled {late:?} late");
}

#[test]
fn a_stalled_application_never_delays_acks() {
    // B's application reads nothing for the whole run (room for one delivery). Every tree copy
    // A sends must still be ACKed one round trip later.
    let latency = ms(50);
    // Far above a round trip: any ACK that waits on the application shows as a timeout too.
    let protocol = fixed_deadline(Duration::from_secs(1));
    let mut sim = sim(latency, Duration::from_secs(20));
    sim.host(host_name(1), {
        let protocol = protocol.clone();
        move || {
            let protocol = protocol.clone();
            async move {
                let (_node, _stalled) = start(1, 2, &protocol, |c| c.delivery_capacity = 1).await;
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    });
    let acks = Rc::new(RefCell::new(Vec::new()));
    let result = Rc::clone(&acks);
    sim.client(host_name(0), async move {
        let (node, _streams) = start(0, 2, &protocol, |_| {}).await;
        sleep_until(ms(500)).await;
        for k in 0..40u64 {
            let sent = now();
            node.broadcast(Bytes::from(vec![k as u8; 4096])).await?;
            let acked = when(&node, |s| s.acks_received > k).await;
            result.borrow_mut().push(acked - sent);
            tokio::time::sleep(ms(5)).await;
        }
        let s = node.stats();
        result
            .borrow_mut()
            .push(Duration::from_secs(s.ack_timeouts + s.resends));
        node.shutdown(ms(100)).await;
        Ok(())
    });
    sim.run().expect("simulation");
    let mut rtts = acks.borrow().clone();
    let failures = rtts.pop().unwrap();
    assert_eq!(failures, Duration::ZERO, "no ACK timeout, no resend");
    assert_eq!(rtts.len(), 40);
    // The first copy waits for the connection (TCP and Noise handshakes); every later one
    // is ACKed one round trip after it left, however much B's application lags behind.
    for (k, rtt) in rtts.iter().enumerate().skip(1) {
        assert!(*rtt <= 2 * latency + ms(3), "ACK {k} took {rtt:?}");
    }
}

#[test]
fn a_slow_application_holds_at_most_the_delivery_budget_and_resumes_when_it_reads() {
    // B's stream has room for 8 deliveries of 4 KiB, but the budget is 16 KiB in all: B must
    // stop taking messages once its application holds that much unread, and take the rest
    // once the application reads.
    let count = 40u64;
    let budget = 16 * 1024;
    let protocol = fixed_deadline(Duration::from_secs(1));
    let mut sim = sim(ms(20), Duration::from_secs(60));
    broadcaster(&mut sim, &protocol, count, 4096);
    let got = Rc::new(RefCell::new((0u64, Vec::new())));
    let out = Rc::clone(&got);
    sim.client(host_name(1), async move {
        let (node, mut streams) = start(1, 2, &protocol, |c| {
            c.delivery_capacity = 8;
            c.delivery_buffer_bytes = budget;
        })
        .await;
        when(&node, |s| s.deliveries > 0).await;
        // Simulated time: long enough for every broadcast to reach B had it kept reading.
        sleep_until(Duration::from_secs(3)).await;
        let stalled = node.stats().deliveries;
        let mut read = Vec::new();
        while (read.len() as u64) < count {
            let d = streams.deliveries.recv().await.expect("delivered");
            read.push(d.payload[0]);
        }
        *out.borrow_mut() = (stalled, read);
        Ok(())
    });
    sim.run().expect("simulation");
    let (stalled, read) = got.borrow().clone();
    // 4 KiB plus 64 bytes each: four fit the budget, and one more is taken before the check.
    assert!(
        (1..=5).contains(&stalled),
        "{stalled} deliveries held unread"
    );
    let mut sorted = read.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len() as u64,
        count,
        "each broadcast read once: {read:?}"
    );
}

#[test]
fn a_partition_heals_and_every_message_gets_through() {
    let mut cfg = wan::WanConfig::new(8, wan::Scenario::Partition, 24, SEED);
    cfg.latency = ms(30);
    cfg.jitter = ms(10);
    let r = wan::run(&cfg).expect("run");
    assert_eq!(r.messages, 24);
    // Messages broadcast while the halves were apart failed their ACKs...
    assert!(r.engine.ack_timeouts > 0, "the partition was felt: {r:?}");
    // ...yet every one reached every node once the links healed.
    assert_eq!(r.complete_messages, 24, "{r:?}");
    assert_eq!(r.coverage, 1.0);
    assert_eq!(r.shutdown_lost_acked, 0);
}

#[test]
fn a_crashed_node_restarting_with_its_identity_is_reconnected_within_the_backoff_bound() {
    // C (n2) crashes at 1 s and restarts at 3 s with the same key; A (n0) broadcasts every
    // 100 ms. A redials C with a back-off capped at 1 s, so C is back in A's broadcasts within
    // the cap plus a broadcast interval and a handshake.
    let max_backoff = Duration::from_secs(1);
    let latency = ms(20);
    let protocol = Config {
        strategy: Strategy::Exact,
        ..Config::default()
    };
    let tweak = move |c: &mut NodeConfig| {
        c.transport.dial_backoff = ms(250);
        c.transport.max_dial_backoff = max_backoff;
    };
    let mut sim = sim(latency, Duration::from_secs(20));
    let first_after_restart = Rc::new(RefCell::new(None));
    for i in 1..3 {
        let (protocol, seen) = (protocol.clone(), Rc::clone(&first_after_restart));
        sim.host(host_name(i), move || {
            let (protocol, seen) = (protocol.clone(), Rc::clone(&seen));
            async move {
                let started = now();
                let (_node, mut streams) = start(i, 3, &protocol, tweak).await;
                while let Some(_d) = streams.deliveries.recv().await {
                    let restarted = started >= Duration::from_secs(2);
                    if i == 2 && restarted && seen.borrow().is_none() {
                        *seen.borrow_mut() = Some(now());
                    }
                }
                Ok(())
            }
        });
    }
    let stats = Rc::new(RefCell::new(None));
    let out = Rc::clone(&stats);
    sim.client(host_name(0), async move {
        let (node, _streams) = start(0, 3, &protocol, tweak).await;
        sleep_until(ms(500)).await;
        while now() < Duration::from_secs(8) {
            node.broadcast(Bytes::from_static(b"tick")).await?;
            tokio::time::sleep(ms(100)).await;
        }
        *out.borrow_mut() = Some(node.stats());
        node.shutdown(ms(500)).await;
        Ok(())
    });
    let (crash_at, restart_at) = (Duration::from_secs(1), Duration::from_secs(3));
    while sim.elapsed() < crash_at {
        sim.step().unwrap();
    }
    sim.crash(host_name(2));
    while sim.elapsed() < restart_at {
        sim.step().unwrap();
    }
    sim.bounce(host_name(2));
    sim.run().expect("simulation");
    let back = first_after_restart
        .borrow()
        .expect("C delivers after its restart");
    let bound = max_backoff + ms(100) + 8 * latency;
    assert!(
        back - restart_at <= bound,
        "C back after {:?}, bound {bound:?}",
        back - restart_at
    );
    let s = stats.borrow().clone().unwrap();
    assert!(s.unreachable > 0, "A noticed the crash: {s:?}");
}

#[test]
fn graceful_shutdown_under_100ms_latency_loses_no_acked_message() {
    // B's application reads nothing until B has shut down. Everything B's engine ACKed must
    // still reach B's application afterwards.
    let protocol = fixed_deadline(Duration::from_secs(2));
    let mut sim = sim(ms(100), Duration::from_secs(20));
    let count = 20u64;
    let got = Rc::new(RefCell::new((0u64, 0u64)));
    let out = Rc::clone(&got);
    broadcaster(&mut sim, &protocol, count, 1000);
    sim.client(host_name(1), async move {
        let (node, mut streams) = start(1, 2, &protocol, |c| c.delivery_capacity = 1).await;
        when(&node, |s| s.acks_sent >= count).await;
        node.shutdown(Duration::from_secs(1)).await;
        let acked = node.stats().deliveries;
        let mut read = 0;
        while streams.deliveries.recv().await.is_some() {
            read += 1;
        }
        *out.borrow_mut() = (acked, read);
        Ok(())
    });
    sim.run().expect("simulation");
    let (acked, read) = *got.borrow();
    assert_eq!(acked, count);
    assert_eq!(read, acked, "every ACKed message reached the application");
}

#[test]
fn simultaneous_dials_end_with_one_connection() {
    // A and B send to each other in the same tick: both dial, both accept.
    let protocol = Config::default();
    let mut sim = sim(ms(30), Duration::from_secs(20));
    let counts = Rc::new(RefCell::new(Vec::new()));
    for i in 0..2 {
        let (protocol, counts) = (protocol.clone(), Rc::clone(&counts));
        sim.client(host_name(i), async move {
            let (node, mut streams) = start(i, 2, &protocol, |_| {}).await;
            sleep_until(ms(500)).await;
            node.send(address(1 - i), Bytes::from_static(b"hi"))?;
            let d = streams.deliveries.recv().await.expect("delivered");
            assert_eq!(d.payload, Bytes::from_static(b"hi"));
            // Long enough for the loser's Goodbye, the peer's close and the linger.
            sleep_until(Duration::from_secs(5)).await;
            counts
                .borrow_mut()
                .push(turmoil::established_tcp_stream_count());
            // Still usable both ways over the connection that stayed.
            node.send(address(1 - i), Bytes::from_static(b"again"))?;
            let d = streams.deliveries.recv().await.expect("delivered");
            assert_eq!(d.payload, Bytes::from_static(b"again"));
            sleep_until(Duration::from_secs(6)).await;
            counts
                .borrow_mut()
                .push(turmoil::established_tcp_stream_count());
            node.shutdown(ms(500)).await;
            Ok(())
        });
    }
    sim.run().expect("simulation");
    assert_eq!(*counts.borrow(), vec![1, 1, 1, 1]);
}
