//! The redundancy ring, the clean-up chain and the bounded seen-set.

use super::*;

#[test]
fn redundancy_fills_tree_gaps_along_the_ring() {
    // Without ACKs a dead tree node's subtree is lost; the right-ring push recovers it.
    let base = Config {
        acks: false,
        ..reference()
    };
    let plain = broadcast_with_dead(27, base.clone(), &[9], b"x");
    let missed = plain.delivered[1..].iter().filter(|&&d| d == 0).count();
    assert!(missed > 1);
    let mut net = Net::new(
        27,
        Config {
            redundancy: Redundancy::Right,
            ..base
        },
    );
    net.dead[9] = true;
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"x"), 0)
        .unwrap();
    net.run(T0);
    for i in 1..27 {
        assert_eq!(net.delivered[i], u32::from(i != 9), "position {i}");
    }
    let pushes: u64 = net.engines.iter().map(|e| e.stats().redundancy_sends).sum();
    assert!(pushes <= 26);
}

#[test]
fn igyw_chain_skips_dead_neighbours_and_fills_gaps() {
    let config = Config {
        acks: false,
        cleanup: true,
        igyw_skip_limit: 2,
        ..Config::default()
    };
    let mut net = broadcast_with_dead(27, config, &[9], b"x");
    net.run_timers(Duration::from_secs(10));
    for i in 1..27 {
        assert_eq!(net.delivered[i], u32::from(i != 9), "position {i}");
    }
    let s: Stats = net.engines.iter().fold(Stats::default(), |mut a, e| {
        a.add(e.stats());
        a
    });
    assert!(s.igyw_want > 0 && s.cleanup_sends == s.igyw_want);
    assert!(s.igyw_have > 0);
}

#[test]
fn seen_set_is_bounded_and_expires_after_timers() {
    let list = Arc::new(PeerList::new((0..3).map(Address::from_index)));
    let me = list.get(0).unwrap();
    let from = list.get(1).unwrap();
    let config = Config {
        acks: false,
        seen_capacity: 4,
        seen_ttl: Duration::from_secs(1),
        ..Config::default()
    };
    let mut e = Engine::new(config, me, list, rng(0)).unwrap();
    let direct = |nonce| BroadcastMessage::Direct {
        id: MessageId {
            origin: from,
            nonce,
        },
        payload: Bytes::new(),
    };
    // Four entries and four tombstones: the ninth and tenth new ids are refused, not a
    // remembered one forgotten.
    for nonce in 0..10 {
        let r = e.handle_message(T0, from, direct(nonce));
        assert_eq!(r.is_ok(), nonce < 8, "nonce {nonce}: {r:?}");
    }
    assert_eq!(e.seen_len(), 4);
    assert_eq!(e.tombstones(), 4);
    assert_eq!(e.stats().evicted, 4);
    assert_eq!(e.stats().seen_full, 2);
    assert_eq!(e.stats().deliveries, 8);
    // Evicted ids are still known: a copy within the age limit is a duplicate.
    for nonce in 0..8 {
        e.handle_message(Duration::from_millis(500), from, direct(nonce))
            .unwrap();
    }
    assert_eq!(e.stats().deliveries, 8);
    e.handle_timeout(Duration::from_millis(999));
    assert_eq!(e.seen_len(), 4);
    e.handle_timeout(Duration::from_secs(1));
    assert_eq!(e.seen_len(), 0);
    assert_eq!(e.poll_timeout(), None);
    // Past the age limit the tombstones go too, and new ids are welcome again.
    e.handle_message(Duration::from_secs(1), from, direct(9))
        .unwrap();
    assert_eq!(e.tombstones(), 0);
    assert_eq!(e.stats().deliveries, 9);
}

#[test]
fn an_entry_with_a_pending_ack_outlives_its_age_limit() {
    let list = Arc::new(PeerList::new((0..3).map(Address::from_index)));
    let me = list.get(0).unwrap();
    // With a pending ACK longer than the TTL the entry stays until the ACK timer is resolved.
    let config = Config {
        seen_ttl: Duration::from_millis(100),
        ack_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let mut e = Engine::new(config, me, list, rng(0)).unwrap();
    let id = e.broadcast(T0, Bytes::from_static(b"x"), 0).unwrap();
    e.handle_timeout(Duration::from_millis(200));
    assert!(e.has_seen(&id));
    e.handle_timeout(Duration::from_millis(500));
    assert!(e.has_seen(&id));
    let end = e.poll_timeout().unwrap();
    e.handle_timeout(end);
    assert!(!e.has_seen(&id));
}
