//! Arbitrary inputs, peer-list changes and replies from peers not asked.

use super::*;

fn arb_message() -> impl PropStrategy<Value = BroadcastMessage> {
    let id = (0u64..4, 0u64..3).prop_map(|(o, nonce)| MessageId {
        origin: Address::from_index(o),
        nonce,
    });
    prop_oneof![
        (
            id.clone(),
            any::<u32>(),
            any::<bool>(),
            0u8..5,
            any::<u32>()
        )
            .prop_map(|(id, lor, ex, r, hops)| {
                BroadcastMessage::Gossip(Gossip {
                    id,
                    level_or_range: lor,
                    strategy: if ex {
                        Strategy::Exact
                    } else {
                        Strategy::Reference
                    },
                    route: [
                        Route::Tree,
                        Route::RingLeft,
                        Route::RingRight,
                        Route::Cleanup,
                        Route::Resend,
                    ][r as usize],
                    origin_time_us: 0,
                    hops,
                    payload: Bytes::from_static(b"p"),
                    signature: None,
                })
            }),
        (id.clone(), any::<u32>()).prop_map(|(id, lor)| BroadcastMessage::Ack {
            id,
            level_or_range: lor
        }),
        (id.clone(), 0u32..40).prop_map(|(id, span)| BroadcastMessage::Igyw { id, span }),
        (id.clone(), any::<bool>()).prop_map(|(id, want)| BroadcastMessage::IgywReply { id, want }),
        id.prop_map(|id| BroadcastMessage::Direct {
            id,
            payload: Bytes::new()
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_inputs_never_panic(
        exact in any::<bool>(),
        steps in proptest::collection::vec((0u64..5, arb_message(), 0u64..2000), 0..60),
    ) {
        let list = Arc::new(PeerList::new((0..4).map(Address::from_index)));
        let config = Config {
            strategy: if exact { Strategy::Exact } else { Strategy::Reference },
            redundancy: Redundancy::Both,
            cleanup: true,
            seen_ttl: Duration::from_secs(1000),
            ..unsigned()
        };
        let mut e = Engine::new(config, list.get(0).unwrap(), list.clone(), rng(9)).unwrap();
        let mut now = Duration::ZERO;
        let mut delivered = std::collections::HashSet::new();
        for (from, m, dt) in steps {
            now += Duration::from_millis(dt);
            let _ = e.handle_message(now, Address::from_index(from), m);
            e.handle_timeout(now);
            if from == 4 {
                let _ = e.broadcast(now, Bytes::from_static(b"b"), 0);
            }
            while let Some(o) = e.poll_output() {
                if let Output::Deliver { id, .. } = o {
                    prop_assert!(delivered.insert(id), "delivered twice");
                }
            }
            if let Some(t) = e.poll_timeout() {
                prop_assert!(t > now, "a due timer was left unfired");
            }
        }
    }
}

#[test]
fn new_peer_lists_apply_to_new_broadcasts() {
    let small = Arc::new(PeerList::new((0..3).map(Address::from_index)));
    let me = small.get(0).unwrap();
    let big = Arc::new(PeerList::new((0..9).map(Address::from_index).chain([me])));
    let config = Config {
        acks: false,
        ..Config::default()
    };
    let mut e = Engine::new(config, me, small, rng(1)).unwrap();
    let count = |e: &mut Engine| std::iter::from_fn(|| e.poll_output()).count();
    e.broadcast(T0, Bytes::from_static(b"a"), 0).unwrap();
    assert_eq!(count(&mut e), 2);
    e.set_peers(big.clone()).unwrap();
    e.broadcast(T0, Bytes::from_static(b"b"), 0).unwrap();
    let expected = crate::tree::originator_plan(Strategy::Reference, big.len() as u64)
        .iter()
        .flat_map(|r| r.targets)
        .filter(|&t| t != 0)
        .count();
    assert_eq!(count(&mut e), expected);
}

#[test]
fn igyw_replies_from_peers_not_asked_are_ignored() {
    let list = Arc::new(PeerList::new((0..5).map(Address::from_index)));
    let config = Config {
        acks: false,
        cleanup: true,
        ..Config::default()
    };
    let mut e = Engine::new(config.clone(), list.get(0).unwrap(), list.clone(), rng(1)).unwrap();
    let id = e.broadcast(T0, Bytes::from_static(b"a"), 0).unwrap();
    while e.poll_output().is_some() {}
    e.handle_timeout(config.cleanup_delay);
    let Some(Output::Send {
        to,
        message: BroadcastMessage::Igyw { .. },
    }) = e.poll_output()
    else {
        panic!("IGYW offer expected after the clean-up delay")
    };
    assert_eq!(list.position(&to), Some(1));
    // A WANT from anyone else sends nothing; the asked neighbour's WANT gets the message.
    e.handle_message(
        T0,
        list.get(3).unwrap(),
        BroadcastMessage::IgywReply { id, want: true },
    )
    .unwrap();
    assert!(e.poll_output().is_none());
    e.handle_message(T0, to, BroadcastMessage::IgywReply { id, want: true })
        .unwrap();
    let Some(Output::Send {
        message: BroadcastMessage::Gossip(g),
        ..
    }) = e.poll_output()
    else {
        panic!("clean-up copy expected")
    };
    assert_eq!(
        (g.route, g.level_or_range, g.payload),
        (Route::Cleanup, 1, Bytes::from_static(b"a"))
    );
    // A node missed it: the chain jumps past it and offers a doubled window.
    let Some(Output::Send {
        to: next,
        message: BroadcastMessage::Igyw { span, .. },
    }) = e.poll_output()
    else {
        panic!("next chain offer expected")
    };
    assert_eq!((list.position(&next), span), (Some(2), 2));
    e.handle_message(T0, to, BroadcastMessage::IgywReply { id, want: true })
        .unwrap();
    assert!(e.poll_output().is_none(), "one WANT, one copy");
    assert_eq!(e.stats().cleanup_sends, 1);
}
