//! One way to feed an [`Engine`] its inputs and take its outputs.
//!
//! What is shared, and by whom:
//! - [`drain`], the hand-over of every output to a [`Sink`] after an input, is used by
//!   everything that steps an engine: the node driver, the simulator, the engine's test
//!   network and the fuzzer. In debug builds it checks [`Engine::check_invariants`] first, so
//!   every input of every debug run is checked.
//! - [`step`] and [`apply`] add the rule for inputs that arrive on a clock of their own (the
//!   node driver): overdue timers fire before the input, so a steady stream of inputs cannot
//!   starve them. The simulator and the engine tests deliver events in deadline order, so no
//!   timer is ever overdue at an input there, and they call the engine's inputs directly.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::RngCore;

use crate::broadcast::{Engine, EngineError, Misbehaviour, Output};
use crate::peers::{Address, PeerList};
use crate::wire::{BroadcastMessage, MessageId};

/// Where a step's outputs go.
pub trait Sink {
    /// The engine sends `message` to `to`.
    fn send(&mut self, to: Address, message: BroadcastMessage);
    /// The engine hands a payload to the application (once per id).
    fn deliver(&mut self, id: MessageId, payload: Bytes, origin_time_us: u64, hops: u32);
    /// `peer` sent something no correct peer sends (already counted in the engine's stats).
    fn misbehaved(&mut self, _peer: Address, _reason: Misbehaviour) {}
}

/// Something that happened to the engine's node.
#[derive(Debug)]
pub enum Input {
    /// Nothing but time passing: only due timers fire.
    Tick,
    /// A message from a peer.
    Message {
        /// The sender.
        from: Address,
        /// The message.
        message: BroadcastMessage,
    },
    /// The transport found `peer` gone (refused dial, reset, handshake failure).
    Unreachable(Address),
    /// The application broadcasts `payload`.
    Broadcast {
        /// The payload.
        payload: Bytes,
        /// The originator's clock, microseconds since the Unix epoch.
        origin_time_us: u64,
    },
    /// The peer list changed.
    SetPeers(Arc<PeerList>),
}

/// What a step produced besides its outputs.
#[derive(Debug)]
pub struct Step {
    /// The input's own result: the id of a broadcast, or why the engine refused the input.
    pub result: Result<Option<MessageId>, EngineError>,
    /// The engine's next deadline, for the caller's timer.
    pub next_timeout: Option<Duration>,
}

/// Feeds `input` to `engine` at `now`: due timers first, then the input, then every output to
/// `sink`.
pub fn step<R: RngCore>(
    engine: &mut Engine<R>,
    now: Duration,
    input: Input,
    sink: &mut impl Sink,
) -> Step {
    let result = apply(engine, now, input);
    drain(engine, sink);
    Step {
        result,
        next_timeout: engine.poll_timeout(),
    }
}

/// The first half of [`step`]: due timers, then the input, leaving the outputs queued in the
/// engine for [`drain`] (a caller may publish the step's counters before its outputs leave).
pub fn apply<R: RngCore>(
    engine: &mut Engine<R>,
    now: Duration,
    input: Input,
) -> Result<Option<MessageId>, EngineError> {
    fire_due(engine, now);
    match input {
        Input::Tick => Ok(None),
        Input::Message { from, message } => engine.handle_message(now, from, message).map(|_| None),
        Input::Unreachable(peer) => {
            engine.peer_unreachable(now, peer);
            Ok(None)
        }
        Input::Broadcast {
            payload,
            origin_time_us,
        } => engine.broadcast(now, payload, origin_time_us).map(Some),
        Input::SetPeers(list) => engine.set_peers(list).map(|_| None),
    }
}

/// Fires the engine's timers if one is due at `now`; true if it did.
pub fn fire_due<R: RngCore>(engine: &mut Engine<R>, now: Duration) -> bool {
    let due = engine.poll_timeout().is_some_and(|t| t <= now);
    if due {
        engine.handle_timeout(now);
    }
    due
}

/// Hands every pending output to `sink`; in debug builds, first checks that the input left
/// the engine consistent.
pub fn drain<R: RngCore>(engine: &mut Engine<R>, sink: &mut impl Sink) {
    #[cfg(debug_assertions)]
    debug_check(engine);
    while let Some(out) = engine.poll_output() {
        match out {
            Output::Send { to, message } => sink.send(to, message),
            Output::Deliver {
                id,
                payload,
                origin_time_us,
                hops,
            } => sink.deliver(id, payload, origin_time_us, hops),
            Output::Misbehaved { peer, reason } => sink.misbehaved(peer, reason),
        }
    }
}

/// The check is linear in the engine's state: after every input while the state is small,
/// and after every 64th once it is large, so a long debug run stays linear in its inputs.
#[cfg(debug_assertions)]
fn debug_check<R: RngCore>(engine: &Engine<R>) {
    let size = engine.seen_len() + engine.timer_count();
    if size <= 256 || engine.inputs() % 64 == 0 {
        if let Err(v) = engine.check_invariants() {
            panic!("{v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::Config;
    use crate::wire::Strategy;

    #[derive(Default)]
    struct Record {
        sent: Vec<(Address, BroadcastMessage)>,
        delivered: Vec<MessageId>,
    }

    impl Sink for Record {
        fn send(&mut self, to: Address, message: BroadcastMessage) {
            self.sent.push((to, message));
        }
        fn deliver(&mut self, id: MessageId, _: Bytes, _: u64, _: u32) {
            self.delivered.push(id);
        }
    }

    fn engines(n: u64) -> (Arc<PeerList>, Vec<Engine>) {
        let list = Arc::new(PeerList::new((0..n).map(Address::from_index)));
        let config = Config {
            strategy: Strategy::Exact,
            ack_timeout: Duration::from_millis(100),
            min_ack_timeout: Duration::from_millis(100),
            max_ack_timeout: Duration::from_millis(100),
            verify_signatures: false,
            ..Config::default()
        };
        let engines = (0..n)
            .map(|i| {
                Engine::new(
                    config.clone(),
                    list.get(i as usize).unwrap(),
                    list.clone(),
                    rand::SeedableRng::seed_from_u64(1),
                )
                .unwrap()
            })
            .collect();
        (list, engines)
    }

    #[test]
    fn a_broadcast_step_sends_and_reports_its_deadline() {
        let (list, mut e) = engines(3);
        let mut out = Record::default();
        let input = Input::Broadcast {
            payload: Bytes::from_static(b"x"),
            origin_time_us: 0,
        };
        let s = step(&mut e[0], Duration::ZERO, input, &mut out);
        assert!(s.result.unwrap().is_some());
        assert_eq!(out.sent.len(), 2);
        assert!(out
            .sent
            .iter()
            .all(|(to, m)| m.kind() == "gossip" && *to != list.get(0).unwrap()));
        assert_eq!(s.next_timeout, Some(Duration::from_millis(100)));
    }

    #[test]
    fn an_overdue_timer_fires_before_the_input() {
        let (list, mut e) = engines(3);
        let mut out = Record::default();
        let input = Input::Broadcast {
            payload: Bytes::from_static(b"x"),
            origin_time_us: 0,
        };
        step(&mut e[0], Duration::ZERO, input, &mut out);
        let one = list.get(1).unwrap();
        let Some((_, BroadcastMessage::Gossip(g))) = out.sent.iter().find(|(to, _)| *to == one)
        else {
            panic!("no copy to node 1: {:?}", out.sent);
        };
        let ack = BroadcastMessage::Ack {
            id: g.id,
            level_or_range: g.level_or_range,
        };
        // Node 1's ACK is handed in long after its deadline: the timeout comes first, in the
        // same step, so the ACK is late rather than in time.
        let late = Duration::from_millis(500);
        step(
            &mut e[0],
            late,
            Input::Message {
                from: one,
                message: ack,
            },
            &mut out,
        );
        assert_eq!(e[0].stats().ack_timeouts, 2);
        assert_eq!(e[0].stats().acks_received, 0);
    }

    #[test]
    fn refused_inputs_come_back_typed_and_emit_nothing() {
        let (_, mut e) = engines(3);
        let mut out = Record::default();
        let stranger = Arc::new(PeerList::new([Address::from_index(99)]));
        let s = step(
            &mut e[0],
            Duration::ZERO,
            Input::SetPeers(stranger),
            &mut out,
        );
        assert_eq!(s.result, Err(EngineError::NotInPeerList));
        assert!(out.sent.is_empty() && out.delivered.is_empty());
    }
}
