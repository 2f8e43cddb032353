//! Failed targets (SPEC 4): resends, re-splits, suspicion, probes, owed messages, deadlines.

use super::*;

#[test]
fn reference_resends_to_neighbours_of_a_dead_target() {
    let list = Arc::new(PeerList::new((0..27).map(Address::from_index)));
    let mut e = Engine::new(reference(), list.get(0).unwrap(), list.clone(), rng(1)).unwrap();
    e.broadcast(T0, Bytes::from_static(b"x"), 0).unwrap();
    let mut sends = 0;
    while let Some(Output::Send {
        to,
        message: BroadcastMessage::Gossip(g),
    }) = e.poll_output()
    {
        sends += 1;
        // Everyone but position 9 (the first level-3 target) acknowledges.
        if list.position(&to) != Some(9) {
            let ack = BroadcastMessage::Ack {
                id: g.id,
                level_or_range: g.level_or_range,
            };
            e.handle_message(T0, to, ack).unwrap();
        }
    }
    assert_eq!(sends, 6);
    // Five ACKs measured round trips of 0: the deadline is the configured minimum, not the
    // initial 500 ms.
    let due = reference().min_ack_timeout;
    assert_eq!(e.poll_timeout(), Some(due));
    e.handle_timeout(due);
    let resent: Vec<(Option<usize>, u32, Route)> = std::iter::from_fn(|| e.poll_output())
        .filter_map(|o| match o {
            Output::Send {
                to,
                message: BroadcastMessage::Gossip(g),
            } => Some((list.position(&to), g.level_or_range, g.route)),
            _ => None,
        })
        .collect();
    assert_eq!(
        resent,
        vec![(Some(10), 2, Route::Resend), (Some(8), 2, Route::Resend)]
    );
    let s = e.stats();
    assert_eq!(
        (s.acks_received, s.ack_timeouts, s.resends, s.give_ups),
        (5, 1, 2, 0)
    );
    // Replacements expect no ACK: nothing is pending but the seen-set's age limit.
    assert_eq!(e.poll_timeout(), Some(reference().seen_ttl));
}

#[test]
fn exact_resplits_a_dead_targets_part_in_three() {
    let mut net = broadcast_with_dead(27, exact(), &[9], b"x");
    net.run_timers(Duration::from_secs(5));
    // Position 9 owned [9, 18); the other 8 nodes go to three new delegates at once.
    let s = net.engines[0].stats();
    assert_eq!((s.ack_timeouts, s.resplits, s.resends), (1, 1, 3));
    for i in 1..27 {
        assert_eq!(net.delivered[i], u32::from(i != 9), "position {i}");
        assert!(
            net.reads[i] <= 1,
            "position {i} read {} copies",
            net.reads[i]
        );
    }
}

#[test]
fn exact_never_drops_a_subtree_while_it_has_live_nodes() {
    for dead in [
        vec![9, 10, 11, 12],
        vec![3, 9, 18, 19, 20, 21, 22, 23, 24, 25],
    ] {
        let mut net = Net::new(27, exact());
        for &d in &dead {
            net.dead[d] = true;
        }
        net.engines[0]
            .broadcast(T0, Bytes::from_static(b"x"), 0)
            .unwrap();
        net.run(T0);
        net.run_timers(Duration::from_secs(30));
        for i in 1..27 {
            let live = !dead.contains(&i);
            assert_eq!(
                net.delivered[i],
                u32::from(live),
                "dead {dead:?} position {i}"
            );
        }
        let gave_up: u64 = net.engines.iter().map(|e| e.stats().give_ups).sum();
        assert!(gave_up as usize <= dead.len());
    }
    // Every node of a part dead: the give-up is counted and nothing else is sent.
    let mut net = broadcast_with_dead(3, exact(), &[2], b"x");
    net.run_timers(Duration::from_secs(5));
    assert_eq!(net.engines[0].stats().give_ups, 1);
    assert_eq!(net.engines[0].stats().resends, 0);
}

#[test]
fn a_suspected_target_is_skipped_with_no_deadline_paid() {
    let mut net = broadcast_with_dead(27, exact(), &[9], b"x");
    net.run_timers(Duration::from_secs(5));
    let nine = net.list.get(9).unwrap();
    let t = Duration::from_secs(6);
    assert!(net.engines[0].is_suspected(t, &nine));
    // The next broadcast reaches every live node exactly once before any timer fires.
    let got = broadcast_without_timers(&mut net, t);
    for (i, g) in got.iter().enumerate().skip(1) {
        assert_eq!(*g, u32::from(i != 9), "position {i}");
    }
    let s = net.engines[0].stats();
    assert_eq!((s.ack_timeouts, s.skips, s.probes), (1, 1, 1));
}

#[test]
fn an_unreachable_signal_fails_pending_sends_at_once() {
    let mut net = broadcast_with_dead(27, exact(), &[9], b"x");
    assert_eq!(net.delivered.iter().filter(|&&d| d == 1).count(), 26 - 9);
    net.engines[0].peer_unreachable(T0, net.list.get(9).unwrap());
    net.drain(0);
    net.run(T0);
    for i in 1..27 {
        assert_eq!(net.delivered[i], u32::from(i != 9), "position {i}");
    }
    let s = net.engines[0].stats();
    assert_eq!((s.ack_timeouts, s.unreachable, s.resplits), (0, 1, 1));
}

#[test]
fn a_peer_that_comes_back_answers_a_probe_and_is_used_again() {
    let mut net = Net::new(27, exact());
    let nine = net.list.get(9).unwrap();
    net.engines[0].peer_unreachable(T0, nine);
    // Back already: the probe's WANT gets it a leaf copy in the same broadcast.
    let got = broadcast_without_timers(&mut net, T0);
    assert!(got[1..].iter().all(|&g| g == 1));
    assert!(!net.engines[0].is_suspected(T0, &nine));
    // The next broadcast delegates the whole part [9, 18) to it again.
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"y"), 0)
        .unwrap();
    let to_nine: Vec<u32> = std::iter::from_fn(|| net.engines[0].poll_output())
        .filter_map(|o| match o {
            Output::Send {
                to,
                message: BroadcastMessage::Gossip(g),
            } if to == nine => Some(g.level_or_range),
            _ => None,
        })
        .collect();
    assert_eq!(to_nine, vec![9]);
}

#[test]
fn a_peer_that_failed_gets_what_it_missed_when_heard_from_again() {
    let mut net = broadcast_with_dead(27, exact(), &[9], b"x");
    net.run_timers(Duration::from_secs(5));
    assert_eq!(net.delivered[9], 0);
    // Back (a partition healed, a crashed node restarted): anything it says is enough.
    net.dead[9] = false;
    let nine = net.list.get(9).unwrap();
    let hello = BroadcastMessage::IgywReply {
        id: MessageId {
            origin: nine,
            nonce: 0,
        },
        want: false,
    };
    let t = Duration::from_secs(6);
    net.engines[0].handle_message(t, nine, hello).unwrap();
    net.drain(0);
    net.run(t);
    assert_eq!(
        net.delivered[9], 1,
        "the missed message is offered and taken"
    );
    assert_eq!(net.engines[0].stats().repaid, 1);
    // Only once.
    net.engines[0]
        .handle_message(
            t,
            nine,
            BroadcastMessage::Ack {
                id: MessageId {
                    origin: nine,
                    nonce: 0,
                },
                level_or_range: 1,
            },
        )
        .unwrap();
    net.drain(0);
    net.run(t);
    assert_eq!(net.delivered[9], 1);
    assert_eq!(net.engines[0].stats().repaid, 1);
}

#[test]
fn suspicion_lapses_after_its_ttl() {
    let config = exact();
    let ttl = config.suspicion_ttl;
    let mut net = Net::new(9, config);
    let three = net.list.get(3).unwrap();
    net.engines[0].peer_unreachable(T0, three);
    assert!(net.engines[0].is_suspected(ttl - Duration::from_millis(1), &three));
    assert!(!net.engines[0].is_suspected(ttl, &three));
}

#[test]
fn ack_deadlines_adapt_to_measured_round_trips() {
    let list = Arc::new(PeerList::new((0..9).map(Address::from_index)));
    let me = list.get(0).unwrap();
    let mut e = Engine::new(exact(), me, list.clone(), rng(1)).unwrap();
    let ms = Duration::from_millis;
    let acks = |e: &mut Engine, at: Duration, skip: Option<usize>| {
        let sends: Vec<_> = std::iter::from_fn(|| e.poll_output()).collect();
        for o in sends {
            if let Output::Send {
                to,
                message: BroadcastMessage::Gossip(g),
            } = o
            {
                if list.position(&to) != skip {
                    let ack = BroadcastMessage::Ack {
                        id: g.id,
                        level_or_range: g.level_or_range,
                    };
                    e.handle_message(at, to, ack).unwrap();
                }
            }
        }
    };
    // Round trips of 100 ms: RTO = 100 + 4 * 50 = 300 ms for every peer.
    e.broadcast(T0, Bytes::from_static(b"a"), 0).unwrap();
    acks(&mut e, ms(100), None);
    assert_eq!(e.ack_deadline(&list.get(3).unwrap()), ms(300));
    // A silent target now costs the measured deadline, not the initial 500 ms.
    let t = ms(1000);
    e.broadcast(t, Bytes::from_static(b"b"), 0).unwrap();
    acks(&mut e, t + ms(100), Some(3));
    let due = e.poll_timeout().unwrap();
    assert!(due < t + ms(500), "deadline {due:?} not adapted");
    e.handle_timeout(due);
    assert_eq!(e.stats().ack_timeouts, 1);
}

#[test]
fn first_deadlines_shrink_once_round_trips_are_measured() {
    // Before any sample the send to a dead node would wait the initial 500 ms; the samples
    // that arrive meanwhile bring its deadline down.
    let mut net = broadcast_with_dead(27, exact(), &[9], b"x");
    net.run_timers(Duration::from_millis(499));
    assert_eq!(net.engines[0].stats().ack_timeouts, 1);
    assert!(net.delivered[10..18].iter().all(|&d| d == 1));
}
