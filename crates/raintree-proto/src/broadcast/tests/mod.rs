//! Engine tests over a tiny in-order network (the simulator has its own, timed tests).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use proptest::prelude::{any, prop_assert, prop_oneof, proptest, Strategy as PropStrategy};

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
    pub queue: VecDeque<(usize, usize, BroadcastMessage)>,
    pub reads: Vec<u32>,
    pub writes: Vec<u32>,
    pub delivered: Vec<u32>,
    pub dead: Vec<bool>,
}

/// Node `i`'s outputs onto the in-order network (through `drive::drain`).
struct NetOut<'a> {
    i: usize,
    list: &'a PeerList,
    queue: &'a mut VecDeque<(usize, usize, BroadcastMessage)>,
    writes: &'a mut [u32],
    delivered: &'a mut [u32],
}

impl crate::drive::Sink for NetOut<'_> {
    fn send(&mut self, to: Address, message: BroadcastMessage) {
        let j = self.list.position(&to).unwrap();
        if matches!(message, BroadcastMessage::Gossip(_)) {
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
            if matches!(m, BroadcastMessage::Gossip(_)) {
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

pub(super) fn exact() -> Config {
    Config {
        strategy: Strategy::Exact,
        ..Config::default()
    }
}

/// A network of `n` nodes with those in `dead` down, after node 0 broadcasts `payload` and
/// the network has run (no timer fired yet).
pub(super) fn broadcast_with_dead(
    n: usize,
    config: Config,
    dead: &[usize],
    payload: &'static [u8],
) -> Net {
    let mut net = Net::new(n, config);
    for &d in dead {
        net.dead[d] = true;
    }
    net.engines[0]
        .broadcast(T0, Bytes::from_static(payload), 0)
        .unwrap();
    net.run(T0);
    net
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

mod cleanup;
mod failures;
mod inputs;
mod invariants;
mod tree;
