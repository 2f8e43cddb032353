//! The trees themselves: the SPEC tables, exact coverage, dedup, deliveries, typed errors.

use super::*;

#[test]
fn spec_reference_tables() {
    assert_eq!(table(2), vec![(0, 1), (1, 0)]);
    assert_eq!(table(4), vec![(0, 3), (2, 1), (2, 1), (1, 0)]);
    #[rustfmt::skip]
    let twelve = vec![(1, 6), (3, 2), (2, 2), (2, 0), (2, 4), (3, 2), (2, 2), (2, 0),
                      (2, 4), (3, 2), (2, 2), (2, 0)];
    assert_eq!(table(12), twelve);
}

#[test]
fn exact_strategy_reaches_everyone_once_with_n_minus_1_sends() {
    let config = Config {
        strategy: Strategy::Exact,
        acks: false,
        ..Config::default()
    };
    for n in 1..=150 {
        let mut net = Net::new(n, config.clone());
        net.engines[n / 2]
            .broadcast(T0, Bytes::from_static(b"x"), 0)
            .unwrap();
        net.run(T0);
        let sends: u32 = net.writes.iter().sum();
        assert_eq!(sends as usize, n - 1, "n={n}");
        for (i, d) in net.delivered.iter().enumerate() {
            assert_eq!(*d, u32::from(i != n / 2), "n={n} position {i}");
        }
        assert!(net.reads.iter().all(|&r| r <= 1));
    }
}

#[test]
fn reference_strategy_covers_powers_of_three_and_delivers_once() {
    for n in [3, 9, 27, 81, 243] {
        let mut net = Net::new(
            n,
            Config {
                acks: false,
                ..Config::default()
            },
        );
        net.engines[0]
            .broadcast(T0, Bytes::from_static(b"x"), 0)
            .unwrap();
        net.run(T0);
        assert!(net.delivered[1..].iter().all(|&d| d == 1), "n={n}");
        assert_eq!(net.engines[1].stats().deliveries, 1);
    }
}

#[test]
fn deliveries_carry_payload_and_hops() {
    let mut net = Net::new(
        9,
        Config {
            acks: false,
            ..Config::default()
        },
    );
    let id = net.engines[0]
        .broadcast(T0, Bytes::from_static(b"hello"), 42)
        .unwrap();
    // Position 3 is the originator's first level-2 target: one hop.
    let sends: Vec<Output> = std::iter::from_fn(|| net.engines[0].poll_output()).collect();
    let Output::Send { to, message } = &sends[0] else {
        panic!("send expected")
    };
    assert_eq!(net.list.position(to), Some(3));
    net.engines[3]
        .handle_message(T0, net.list.get(0).unwrap(), message.clone())
        .unwrap();
    let out = net.engines[3].poll_output().unwrap();
    assert_eq!(
        out,
        Output::Deliver {
            id,
            payload: Bytes::from_static(b"hello"),
            origin_time_us: 42,
            hops: 1
        }
    );
    let Some(Output::Send {
        message: BroadcastMessage::Gossip(g),
        ..
    }) = net.engines[3].poll_output()
    else {
        panic!("forward expected")
    };
    assert_eq!((g.hops, g.level_or_range, g.route), (2, 1, Route::Tree));
}

#[test]
fn errors_are_typed_and_emit_nothing() {
    let list = Arc::new(PeerList::new((0..3).map(Address::from_index)));
    let stranger = Address::from_index(99);
    assert_eq!(
        Engine::new(reference(), stranger, list.clone(), rng(1)).err(),
        Some(EngineError::NotInPeerList)
    );
    let me = list.get(0).unwrap();
    let mut e = Engine::new(
        Config {
            max_payload: 4,
            ..reference()
        },
        me,
        list.clone(),
        rng(1),
    )
    .unwrap();
    assert_eq!(
        e.broadcast(T0, Bytes::from_static(b"12345"), 0),
        Err(EngineError::PayloadTooLarge { len: 5, max: 4 })
    );
    assert!(e.poll_output().is_none());
    assert_eq!(e.poll_timeout(), None);
    let from = list.get(1).unwrap();
    let exact = BroadcastMessage::Gossip(Gossip {
        strategy: Strategy::Exact,
        ..Gossip::default()
    });
    assert!(matches!(
        e.handle_message(T0, from, exact),
        Err(EngineError::StrategyMismatch { .. })
    ));
    assert_eq!(e.stats().rejected, 1);
    assert!(e.poll_output().is_none());
    assert_eq!(
        e.set_peers(Arc::new(PeerList::new([stranger]))),
        Err(EngineError::NotInPeerList)
    );
}

#[test]
fn direct_messages_are_delivered_once_and_never_forwarded() {
    let mut net = Net::new(5, Config::default());
    let id = MessageId {
        origin: net.list.get(1).unwrap(),
        nonce: 7,
    };
    let from = net.list.get(1).unwrap();
    for _ in 0..2 {
        let m = BroadcastMessage::Direct {
            id,
            payload: Bytes::from_static(b"d"),
        };
        net.engines[0].handle_message(T0, from, m).unwrap();
    }
    let outs: Vec<Output> = std::iter::from_fn(|| net.engines[0].poll_output()).collect();
    assert_eq!(outs.len(), 1);
    assert!(matches!(outs[0], Output::Deliver { hops: 1, .. }));
    assert_eq!(net.engines[0].stats().duplicates, 1);
}

#[test]
fn tree_copies_are_acked_even_when_duplicate() {
    let list = Arc::new(PeerList::new((0..9).map(Address::from_index)));
    let me = list.get(4).unwrap();
    let from = list.get(0).unwrap();
    let mut e = Engine::new(unsigned(), me, list.clone(), rng(3)).unwrap();
    let id = MessageId {
        origin: from,
        nonce: 1,
    };
    let copy = Gossip {
        id,
        level_or_range: 1,
        hops: 1,
        payload: Bytes::from_static(b"p"),
        ..Gossip::default()
    };
    for _ in 0..2 {
        e.handle_message(T0, from, BroadcastMessage::Gossip(copy.clone()))
            .unwrap();
    }
    let acks = std::iter::from_fn(|| e.poll_output())
        .filter(|o| matches!(o, Output::Send { message: BroadcastMessage::Ack { level_or_range: 1, .. }, to } if *to == from))
        .count();
    assert_eq!(acks, 2);
}

#[test]
fn level_aware_dedup_forwards_only_new_levels() {
    let list = Arc::new(PeerList::new((0..27).map(Address::from_index)));
    let from = list.get(0).unwrap();
    let mut e = Engine::new(
        Config {
            acks: false,
            ..unsigned()
        },
        list.get(5).unwrap(),
        list.clone(),
        rng(3),
    )
    .unwrap();
    let id = MessageId {
        origin: from,
        nonce: 1,
    };
    let copy = |level| {
        BroadcastMessage::Gossip(Gossip {
            id,
            level_or_range: level,
            payload: Bytes::from_static(b"p"),
            ..Gossip::default()
        })
    };
    let count = |e: &mut Engine| {
        std::iter::from_fn(|| e.poll_output())
            .filter(|o| matches!(o, Output::Send { .. }))
            .count()
    };
    e.handle_message(T0, from, copy(2)).unwrap();
    assert_eq!(count(&mut e), 2); // level 1: two targets
    e.handle_message(T0, from, copy(2)).unwrap();
    e.handle_message(T0, from, copy(1)).unwrap();
    assert_eq!(count(&mut e), 0);
    e.handle_message(T0, from, copy(3)).unwrap();
    assert_eq!(count(&mut e), 2); // only level 2 is new
    assert_eq!(e.stats().duplicates, 3);
}
