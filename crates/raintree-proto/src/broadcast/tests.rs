//! Engine tests over a tiny in-order network (the simulator has its own, timed tests).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use proptest::prelude::{any, prop_assert, prop_oneof, proptest, Just, Strategy as PropStrategy};

use super::*;
use crate::peers::PeerList;
use crate::wire::{Gossip, Route, Strategy};

const T0: Duration = Duration::ZERO;

/// Engines fed hand-made gossip: nothing is signed, nothing verified (reference tree).
pub(super) fn unsigned() -> Config {
    Config {
        verify_signatures: false,
        ..reference()
    }
}

/// A deterministic signing key.
pub(super) fn key(i: u64) -> SigningKey {
    let mut b = [7u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    SigningKey::from_bytes(&b)
}

pub(super) fn address_of(k: &SigningKey) -> Address {
    Address::from_public_key(&k.verifying_key().to_bytes())
}

/// A seeded nonce generator: tests replay exactly.
pub(super) fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::SeedableRng::seed_from_u64(seed)
}

/// N engines delivering messages in FIFO order at one instant; counts reads/writes per position.
pub(super) struct Net {
    pub list: Arc<PeerList>,
    pub engines: Vec<Engine>,
    pub queue: VecDeque<(usize, usize, Message)>,
    pub reads: Vec<u32>,
    pub writes: Vec<u32>,
    pub delivered: Vec<u32>,
    pub dead: Vec<bool>,
}

/// Node `i`'s outputs onto the in-order network (through `drive::drain`).
struct NetOut<'a> {
    i: usize,
    list: &'a PeerList,
    queue: &'a mut VecDeque<(usize, usize, Message)>,
    writes: &'a mut [u32],
    delivered: &'a mut [u32],
}

impl crate::drive::Sink for NetOut<'_> {
    fn send(&mut self, to: Address, message: Message) {
        let j = self.list.position(&to).unwrap();
        if matches!(message, Message::Gossip(_)) {
            self.writes[self.i] += 1;
        }
        self.queue.push_back((self.i, j, message));
    }

    fn deliver(&mut self, _: MessageId, _: Bytes, _: u64, _: u32) {
        self.delivered[self.i] += 1;
    }
}

impl Net {
    pub fn new(n: usize, config: Config) -> Self {
        let keys: Vec<SigningKey> = (0..n as u64).map(key).collect();
        let list = Arc::new(PeerList::new(keys.iter().map(address_of)));
        // Every engine signs and verifies, as a node does.
        let engines = list
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let k = keys.iter().find(|k| address_of(k) == *a).unwrap().clone();
                Engine::new(config.clone(), *a, list.clone(), rng(i as u64))
                    .unwrap()
                    .with_signing_key(k)
                    .unwrap()
            })
            .collect();
        Net {
            list,
            engines,
            queue: VecDeque::new(),
            reads: vec![0; n],
            writes: vec![0; n],
            delivered: vec![0; n],
            dead: vec![false; n],
        }
    }

    pub fn drain(&mut self, i: usize) {
        let Net {
            list,
            engines,
            queue,
            writes,
            delivered,
            ..
        } = self;
        let mut out = NetOut {
            i,
            list,
            queue,
            writes,
            delivered,
        };
        crate::drive::drain(&mut engines[i], &mut out);
    }

    pub fn run(&mut self, now: Duration) {
        for i in 0..self.engines.len() {
            self.drain(i);
        }
        while let Some((from, to, m)) = self.queue.pop_front() {
            if self.dead[to] {
                continue;
            }
            if matches!(m, Message::Gossip(_)) {
                self.reads[to] += 1;
            }
            let from = self.list.get(from).unwrap();
            self.engines[to].handle_message(now, from, m).unwrap();
            self.drain(to);
        }
    }

    /// Fires every timer due by `until`, in deadline order, running the network in between.
    pub fn run_timers(&mut self, until: Duration) {
        loop {
            let next = (0..self.engines.len())
                .filter(|&i| !self.dead[i])
                .filter_map(|i| self.engines[i].poll_timeout().map(|t| (t, i)))
                .filter(|&(t, _)| t <= until)
                .min();
            let Some((t, i)) = next else { break };
            self.engines[i].handle_timeout(t);
            self.drain(i);
            self.run(t);
        }
    }
}

/// The reference strategy (SPEC 2), which is no longer the default.
pub(super) fn reference() -> Config {
    Config {
        strategy: Strategy::Reference,
        ..Config::default()
    }
}

fn conformance() -> Config {
    Config {
        acks: false,
        forward_duplicates: true,
        ..reference()
    }
}

fn table(n: usize) -> Vec<(u32, u32)> {
    let mut net = Net::new(n, conformance());
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"b"), 0)
        .unwrap();
    net.run(T0);
    net.reads
        .iter()
        .copied()
        .zip(net.writes.iter().copied())
        .collect()
}

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
        message: Message::Gossip(g),
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
    let req = Message::Request {
        id: 1,
        payload: Bytes::new(),
    };
    assert_eq!(
        e.handle_message(T0, from, req),
        Err(EngineError::Unexpected("request"))
    );
    let exact = Message::Gossip(Gossip {
        strategy: Strategy::Exact,
        ..Gossip::default()
    });
    assert!(matches!(
        e.handle_message(T0, from, exact),
        Err(EngineError::StrategyMismatch { .. })
    ));
    assert_eq!(e.stats().rejected, 2);
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
        let m = Message::Direct {
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
        e.handle_message(T0, from, Message::Gossip(copy.clone()))
            .unwrap();
    }
    let acks = std::iter::from_fn(|| e.poll_output())
        .filter(|o| matches!(o, Output::Send { message: Message::Ack { level_or_range: 1, .. }, to } if *to == from))
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
        Message::Gossip(Gossip {
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

#[test]
fn reference_resends_to_neighbours_of_a_dead_target() {
    let list = Arc::new(PeerList::new((0..27).map(Address::from_index)));
    let mut e = Engine::new(reference(), list.get(0).unwrap(), list.clone(), rng(1)).unwrap();
    e.broadcast(T0, Bytes::from_static(b"x"), 0).unwrap();
    let mut sends = 0;
    while let Some(Output::Send {
        to,
        message: Message::Gossip(g),
    }) = e.poll_output()
    {
        sends += 1;
        // Everyone but position 9 (the first level-3 target) acknowledges.
        if list.position(&to) != Some(9) {
            let ack = Message::Ack {
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
                message: Message::Gossip(g),
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

pub(super) fn exact() -> Config {
    Config {
        strategy: Strategy::Exact,
        ..Config::default()
    }
}

#[test]
fn exact_resplits_a_dead_targets_part_in_three() {
    let mut net = Net::new(27, exact());
    net.dead[9] = true;
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"x"), 0)
        .unwrap();
    net.run(T0);
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
    let mut net = Net::new(3, exact());
    net.dead[2] = true;
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"x"), 0)
        .unwrap();
    net.run(T0);
    net.run_timers(Duration::from_secs(5));
    assert_eq!(net.engines[0].stats().give_ups, 1);
    assert_eq!(net.engines[0].stats().resends, 0);
}

/// Runs one broadcast from position 0 with no timer fired, and returns who got it.
fn broadcast_without_timers(net: &mut Net, now: Duration) -> Vec<u32> {
    let before = net.delivered.clone();
    net.engines[0]
        .broadcast(now, Bytes::from_static(b"x"), 0)
        .unwrap();
    net.run(now);
    net.delivered
        .iter()
        .zip(before)
        .map(|(a, b)| a - b)
        .collect()
}

#[test]
fn a_suspected_target_is_skipped_with_no_deadline_paid() {
    let mut net = Net::new(27, exact());
    net.dead[9] = true;
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"x"), 0)
        .unwrap();
    net.run(T0);
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
    let mut net = Net::new(27, exact());
    net.dead[9] = true;
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"x"), 0)
        .unwrap();
    net.run(T0);
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
                message: Message::Gossip(g),
            } if to == nine => Some(g.level_or_range),
            _ => None,
        })
        .collect();
    assert_eq!(to_nine, vec![9]);
}

#[test]
fn a_peer_that_failed_gets_what_it_missed_when_heard_from_again() {
    let mut net = Net::new(27, exact());
    net.dead[9] = true;
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"x"), 0)
        .unwrap();
    net.run(T0);
    net.run_timers(Duration::from_secs(5));
    assert_eq!(net.delivered[9], 0);
    // Back (a partition healed, a crashed node restarted): anything it says is enough.
    net.dead[9] = false;
    let nine = net.list.get(9).unwrap();
    let hello = Message::IgywReply {
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
            Message::Ack {
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
                message: Message::Gossip(g),
            } = o
            {
                if list.position(&to) != skip {
                    let ack = Message::Ack {
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
    let mut net = Net::new(27, exact());
    net.dead[9] = true;
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"x"), 0)
        .unwrap();
    net.run(T0);
    net.run_timers(Duration::from_millis(499));
    assert_eq!(net.engines[0].stats().ack_timeouts, 1);
    assert!(net.delivered[10..18].iter().all(|&d| d == 1));
}

#[test]
fn redundancy_fills_tree_gaps_along_the_ring() {
    // Without ACKs a dead tree node's subtree is lost; the right-ring push recovers it.
    let base = Config {
        acks: false,
        ..reference()
    };
    let mut plain = Net::new(27, base.clone());
    plain.dead[9] = true;
    plain.engines[0]
        .broadcast(T0, Bytes::from_static(b"x"), 0)
        .unwrap();
    plain.run(T0);
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
    let mut net = Net::new(27, config);
    net.dead[9] = true;
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"x"), 0)
        .unwrap();
    net.run(T0);
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
    let mut e = Engine::new(config, me, list.clone(), rng(0)).unwrap();
    let direct = |nonce| Message::Direct {
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

fn arb_message() -> impl PropStrategy<Value = Message> {
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
                Message::Gossip(Gossip {
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
        (id.clone(), any::<u32>()).prop_map(|(id, lor)| Message::Ack {
            id,
            level_or_range: lor
        }),
        (id.clone(), 0u32..40).prop_map(|(id, span)| Message::Igyw { id, span }),
        (id.clone(), any::<bool>()).prop_map(|(id, want)| Message::IgywReply { id, want }),
        id.prop_map(|id| Message::Direct {
            id,
            payload: Bytes::new()
        }),
        Just(Message::Goodbye {
            reason: String::new()
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
        message: Message::Igyw { .. },
    }) = e.poll_output()
    else {
        panic!("IGYW offer expected after the clean-up delay")
    };
    assert_eq!(list.position(&to), Some(1));
    // A WANT from anyone else sends nothing; the asked neighbour's WANT gets the message.
    e.handle_message(
        T0,
        list.get(3).unwrap(),
        Message::IgywReply { id, want: true },
    )
    .unwrap();
    assert!(e.poll_output().is_none());
    e.handle_message(T0, to, Message::IgywReply { id, want: true })
        .unwrap();
    let Some(Output::Send {
        message: Message::Gossip(g),
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
        message: Message::Igyw { span, .. },
    }) = e.poll_output()
    else {
        panic!("next chain offer expected")
    };
    assert_eq!((list.position(&next), span), (Some(2), 2));
    e.handle_message(T0, to, Message::IgywReply { id, want: true })
        .unwrap();
    assert!(e.poll_output().is_none(), "one WANT, one copy");
    assert_eq!(e.stats().cleanup_sends, 1);
}
