//! Forged origins, substituted payloads, spoofed direct messages, impossible levels.

use super::*;

/// Copies of `real` whose origin is not proven, each in its own way.
fn forgeries_of(real: &Gossip) -> [Gossip; 5] {
    let resigned = auth::sign(
        &key(99),
        &real.id,
        real.origin_time_us,
        real.strategy,
        &crate::wire::payload_hash(b"evil"),
    );
    [
        // The real signature over other bytes.
        Gossip {
            payload: Bytes::from_static(b"evil"),
            ..real.clone()
        },
        Gossip {
            origin_time_us: 7,
            ..real.clone()
        },
        // A valid signature by a key that is not the origin's.
        Gossip {
            payload: Bytes::from_static(b"evil"),
            signature: Some(resigned),
            ..real.clone()
        },
        // The origin's key with another key's signature bytes.
        Gossip {
            signature: Some(Arc::new(OriginSignature {
                public_key: real.signature.as_ref().unwrap().public_key,
                signature: [1; 64],
            })),
            ..real.clone()
        },
        Gossip {
            signature: None,
            ..real.clone()
        },
    ]
}

#[test]
fn forged_origins_are_dropped_before_they_are_seen_acked_or_delivered() {
    let mut net = Net::new(9, exact());
    // A leaf copy, so that the range is one any sender may give.
    let real = Gossip {
        level_or_range: 1,
        ..first_copy(&mut net, b"block")
    };
    let from = net.list.get(3).unwrap();
    let forgeries = forgeries_of(&real);
    let victim = &mut net.engines[5];
    for (i, f) in forgeries.iter().enumerate() {
        let r = victim.handle_message(T0, from, BroadcastMessage::Gossip(f.clone()));
        assert!(
            matches!(r, Err(EngineError::Forged(_))),
            "forgery {i}: {r:?}"
        );
        assert!(outputs(victim).is_empty(), "forgery {i} got an answer");
        assert!(
            !victim.has_seen(&real.id),
            "forgery {i} poisoned the seen-set"
        );
    }
    assert_eq!(victim.stats().forged, forgeries.len() as u64);
    assert_eq!(victim.stats().deliveries, 0);
    // The real broadcast is still delivered, with its own bytes.
    victim
        .handle_message(T0, from, BroadcastMessage::Gossip(real.clone()))
        .unwrap();
    let delivered: Vec<Bytes> = outputs(victim)
        .into_iter()
        .filter_map(|o| match o {
            Output::Deliver { payload, .. } => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![Bytes::from_static(b"block")]);
}

/// A reference-strategy network without ACKs: a leaf copy leaves the entry idle, so its
/// payload is released, and a later copy one level higher asks the node to forward.
fn released_leaf() -> (Net, Gossip, usize) {
    let mut net = Net::new(
        27,
        Config {
            acks: false,
            ..super::tests::reference()
        },
    );
    let real = first_copy(&mut net, b"block");
    let leaf = Gossip {
        level_or_range: 1,
        route: Route::Tree,
        ..real
    };
    let x = 13;
    net.engines[x]
        .handle_message(
            T0,
            net.list.get(0).unwrap(),
            BroadcastMessage::Gossip(leaf.clone()),
        )
        .unwrap();
    assert_eq!(
        outputs(&mut net.engines[x]).len(),
        1,
        "delivered, nothing sent"
    );
    (net, leaf, x)
}

#[test]
fn a_duplicate_never_substitutes_its_payload() {
    let (mut net, leaf, x) = released_leaf();
    let from = net.list.get(0).unwrap();
    let evil = Gossip {
        level_or_range: 2,
        payload: Bytes::from_static(b"evil"),
        ..leaf.clone()
    };
    let r = net.engines[x].handle_message(T0, from, BroadcastMessage::Gossip(evil));
    assert_eq!(
        r,
        Err(EngineError::Forged(
            "payload differs from the one delivered"
        ))
    );
    assert!(outputs(&mut net.engines[x]).is_empty());
    // The same duplicate with the delivered bytes, but junk signature bytes: not verified
    // again, forwarded with the payload and signature this node accepted first.
    let honest = Gossip {
        level_or_range: 2,
        signature: Some(Arc::new(OriginSignature {
            public_key: [0; 32],
            signature: [0; 64],
        })),
        ..leaf.clone()
    };
    net.engines[x]
        .handle_message(T0, from, BroadcastMessage::Gossip(honest))
        .unwrap();
    let sent: Vec<Gossip> = outputs(&mut net.engines[x])
        .into_iter()
        .filter_map(|o| match o {
            Output::Send {
                message: BroadcastMessage::Gossip(g),
                ..
            } => Some(g),
            _ => None,
        })
        .collect();
    assert!(!sent.is_empty(), "level 2 forwards level 1");
    for g in sent {
        assert_eq!(g.payload, leaf.payload);
        assert_eq!(g.signature, leaf.signature);
    }
    assert_eq!(net.engines[x].stats().forged, 1);
    assert_eq!(net.engines[x].stats().deliveries, 1);
}

#[test]
fn direct_messages_are_accepted_only_in_the_senders_name() {
    let mut net = Net::new(4, exact());
    let (a, b) = (net.list.get(1).unwrap(), net.list.get(2).unwrap());
    let spoofed = BroadcastMessage::Direct {
        id: MessageId {
            origin: b,
            nonce: 5,
        },
        payload: Bytes::from_static(b"d"),
    };
    let e = &mut net.engines[0];
    assert_eq!(
        e.handle_message(T0, a, spoofed.clone()),
        Err(EngineError::Forged("direct message in another node's name"))
    );
    assert!(outputs(e).is_empty());
    let id = MessageId {
        origin: b,
        nonce: 5,
    };
    assert!(!e.has_seen(&id));
    e.handle_message(T0, b, spoofed).unwrap();
    assert!(e.has_seen(&id));
    assert_eq!(e.stats().forged, 1);
    assert_eq!(e.stats().deliveries, 1);
}

#[test]
fn a_signing_key_must_be_the_nodes_own() {
    let net = Net::new(3, exact());
    let me = net.list.get(0).unwrap();
    let e = Engine::new(exact(), me, net.list.clone(), super::tests::rng(1)).unwrap();
    let stranger = key(1000);
    assert_eq!(
        e.with_signing_key(stranger).err(),
        Some(EngineError::WrongSigningKey)
    );
}

#[test]
fn reference_levels_above_l_are_refused() {
    let mut net = Net::new(
        27,
        Config {
            acks: true,
            ..super::tests::reference()
        },
    );
    let real = first_copy(&mut net, b"block");
    let from = net.list.get(0).unwrap();
    let e = &mut net.engines[13];
    let too_high = Gossip {
        level_or_range: 4,
        ..real.clone()
    };
    assert_eq!(
        e.handle_message(T0, from, BroadcastMessage::Gossip(too_high)),
        Err(EngineError::ImpossibleRange { got: 4, max: 3 })
    );
    assert!(outputs(e).is_empty(), "no ACK, no delivery");
    assert!(!e.has_seen(&real.id));
    assert_eq!(e.stats().impossible, 1);
    let top = Gossip {
        level_or_range: 3,
        ..real
    };
    e.handle_message(T0, from, BroadcastMessage::Gossip(top))
        .unwrap();
    assert_eq!(e.stats().deliveries, 1);
}

/// Issue 17, finding 1: one small clean-up copy with a window of `u32::MAX` made a node offer
/// the message to every other node (about 2n messages per node and id), with clean-up off.
#[test]
fn an_unasked_clean_up_window_makes_no_offers() {
    let mut net = Net::new(27, exact());
    let real = first_copy(&mut net, b"block");
    net.run(T0);
    let sent_before: u64 = net.engines.iter().map(|e| e.stats().igyw_sent).sum();
    let amplify = Gossip {
        route: Route::Cleanup,
        level_or_range: u32::MAX,
        ..real
    };
    let from = net.list.get(3).unwrap();
    net.engines[5]
        .handle_message(T0, from, BroadcastMessage::Gossip(amplify))
        .unwrap();
    net.drain(5);
    net.run_timers(Duration::from_secs(60));
    let sent: u64 = net.engines.iter().map(|e| e.stats().igyw_sent).sum();
    assert_eq!(
        sent, sent_before,
        "offers made for a window nobody asked for"
    );
    assert_eq!(net.engines[5].stats().unasked_windows, 1);
}
