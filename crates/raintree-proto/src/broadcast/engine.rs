//! The engine's public face: inputs in, outputs and deadlines out.
//!
//! Node-wide state lives in [`Core`]; a message's state in its seen-entry. An input that
//! concerns one message runs as a [`Ctx`] over both, through [`Engine::with_entry`], which
//! settles the held-byte budget once the input is done with the entry. The call order of
//! every input: answers owed to the sender are repaid, then the input, then stale timers at
//! the top of the heap are dropped (`prune_stale`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use rand::RngCore;

use super::budget::{Budget, Held};
use super::cleanup::Wanted;
use super::duty::{TreeState, View};
use super::ledger::{Match, Outcome};
use super::liveness::{Liveness, LivenessConfig};
use super::seen::{Entry, Facts, SeenSet, Share};
use super::timers::{Timer, TimerKind, Timers};
use super::{auth, Config, EngineError, Output, Stats};
use crate::peers::{Address, PeerList};
use crate::wire::{payload_hash, BroadcastMessage, MessageId};

/// Node-wide state: what every message's duties share.
#[derive(Debug)]
pub(super) struct Core {
    pub config: Arc<Config>,
    pub me: Address,
    /// The current view: new messages are split on it.
    pub view: View,
    pub timers: Timers,
    pub outputs: VecDeque<Output>,
    pub wanted: Wanted,
    pub stats: Stats,
    pub live: Liveness,
    pub budget: Budget,
    /// Inputs taken so far.
    pub inputs: u64,
}

impl Core {
    /// Queues `message` for `to`, counting it.
    pub fn send(&mut self, to: Address, message: BroadcastMessage) {
        match &message {
            BroadcastMessage::Gossip(_) => self.stats.gossip_sent += 1,
            BroadcastMessage::Ack { .. } => self.stats.acks_sent += 1,
            BroadcastMessage::Igyw { .. } => self.stats.igyw_sent += 1,
            BroadcastMessage::IgywReply { .. } | BroadcastMessage::Direct { .. } => {}
        }
        self.outputs.push_back(Output::Send { to, message });
    }

    /// Marks `peer` failed; counts it when it was not suspected already.
    pub fn suspect(&mut self, peer: Address, now: Duration) {
        if self.live.suspect(peer, now) {
            self.stats.suspicions += 1;
        }
    }
}

/// One message's state together with the node's, for the length of one input.
pub(super) struct Ctx<'a> {
    pub node: &'a mut Core,
    pub now: Duration,
    pub id: MessageId,
    pub e: &'a mut Entry,
}

impl Ctx<'_> {
    /// Queues `message` for `to`.
    pub fn send(&mut self, to: Address, message: BroadcastMessage) {
        self.node.send(to, message);
    }

    /// Sets a timer of `kind` for this message at `at`; the entry outlives it.
    pub fn schedule(&mut self, at: Duration, kind: TimerKind) {
        self.e.ledger.note_deadline(at);
        self.node.timers.push(at, self.id, self.e.seq(), kind);
    }

    /// The copy of this message this node sends, marked `lor`, on `route`.
    pub fn copy(&self, lor: u32, route: crate::wire::Route) -> BroadcastMessage {
        let payload = self.e.held.payload().clone();
        self.e
            .facts
            .copy(self.id, payload, self.node.config.strategy, lor, route)
    }

    /// The peer at view offset `off` of this message, unless that is this node itself.
    pub fn other_at(&self, off: usize) -> Option<Address> {
        self.e.facts.view().at(off).filter(|to| *to != self.node.me)
    }
}

/// One node's RainTree protocol state: a pure state machine (no I/O, no clock).
///
/// `R` draws the nonces of this node's broadcasts: a CSPRNG in a real node, so that one
/// observed id reveals nothing of the next; a seeded generator in tests and the simulator.
#[derive(Debug)]
pub struct Engine<R = rand::rngs::StdRng> {
    pub(super) core: Core,
    pub(super) seen: SeenSet,
    /// Signs this node's broadcasts; boxed, as most simulated engines never originate.
    signer: Option<Box<SigningKey>>,
    rng: R,
}

impl<R: RngCore> Engine<R> {
    /// A node `me` in `peers`; `rng` draws its nonces. Errors if `me` is not in `peers`.
    pub fn new(
        config: Config,
        me: Address,
        peers: Arc<PeerList>,
        rng: R,
    ) -> Result<Self, EngineError> {
        Self::with_shared_config(Arc::new(config), me, peers, rng)
    }

    /// Like [`Engine::new`] with a config shared between many engines (the simulator).
    pub fn with_shared_config(
        config: Arc<Config>,
        me: Address,
        peers: Arc<PeerList>,
        rng: R,
    ) -> Result<Self, EngineError> {
        let view = View::new(peers, &me).ok_or(EngineError::NotInPeerList)?;
        let live = Liveness::new(LivenessConfig {
            initial: config.ack_timeout,
            min: config.min_ack_timeout,
            max: config.max_ack_timeout,
            suspicion_ttl: config.suspicion_ttl,
        });
        Ok(Engine {
            seen: SeenSet::new(config.seen_capacity),
            core: Core {
                budget: Budget::new(config.held_bytes),
                config,
                me,
                view,
                timers: Timers::new(),
                outputs: VecDeque::new(),
                wanted: Wanted::default(),
                stats: Stats::default(),
                live,
                inputs: 0,
            },
            signer: None,
            rng,
        })
    }

    /// Signs this node's broadcasts with `key` (SPEC 7); its address must be this node's.
    pub fn with_signing_key(mut self, key: SigningKey) -> Result<Self, EngineError> {
        let address = Address::from_public_key(&key.verifying_key().to_bytes());
        if address != self.core.me {
            return Err(EngineError::WrongSigningKey);
        }
        self.signer = Some(Box::new(key));
        Ok(self)
    }

    /// Replaces the peer list; messages already known keep the view they started with.
    pub fn set_peers(&mut self, peers: Arc<PeerList>) -> Result<(), EngineError> {
        let view = View::new(peers, &self.core.me).ok_or(EngineError::NotInPeerList)?;
        self.core.live.retain_listed(view.peers());
        self.core.view = view;
        Ok(())
    }

    /// Originates a broadcast of `payload`; returns its id.
    pub fn broadcast(
        &mut self,
        now: Duration,
        payload: Bytes,
        origin_time_us: u64,
    ) -> Result<MessageId, EngineError> {
        let max = self.core.config.max_payload;
        if payload.len() > max {
            return Err(EngineError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        let id = self.fresh_id();
        let hash = payload_hash(&payload);
        let strategy = self.core.config.strategy;
        let signature = self
            .signer
            .as_ref()
            .map(|k| auth::sign(k, &id, origin_time_us, strategy, &hash));
        let facts = Facts::new(self.core.view.clone(), hash, signature, origin_time_us, 0);
        let entry = Entry::new(facts, TreeState::default(), Held::new(payload, false));
        self.room_for(now, id, None)?;
        self.insert(now, id, entry)?;
        self.core.stats.broadcasts += 1;
        self.with_entry(now, id, |ctx| ctx.originate());
        self.prune_stale();
        Ok(id)
    }

    /// A nonce of this node's that names no remembered message.
    fn fresh_id(&mut self) -> MessageId {
        loop {
            let id = MessageId {
                origin: self.core.me,
                nonce: self.rng.next_u64(),
            };
            if !self.seen.knows(&id) {
                return id;
            }
        }
    }

    /// Handles a message `msg` received from the peer `from`.
    pub fn handle_message(
        &mut self,
        now: Duration,
        from: Address,
        msg: BroadcastMessage,
    ) -> Result<(), EngineError> {
        // Anything from a peer shows it is up, whatever the message; what it missed while it
        // was failing is offered to it again.
        let owed = self.core.live.heard_from(&from);
        for (id, seq) in owed {
            self.with_entry_seq(now, id, seq, |ctx| ctx.repay(from));
        }
        let r = match msg {
            BroadcastMessage::Gossip(g) => self.on_gossip(now, from, g),
            BroadcastMessage::Ack { id, level_or_range } => {
                self.with_entry(now, id, |ctx| ctx.on_ack(from, level_or_range));
                Ok(())
            }
            BroadcastMessage::Igyw { id, span } => {
                self.on_igyw(now, from, id, span);
                Ok(())
            }
            BroadcastMessage::IgywReply { id, want } => {
                self.with_entry(now, id, |ctx| ctx.on_igyw_reply(from, want));
                Ok(())
            }
            BroadcastMessage::Direct { id, payload } => self.on_direct(now, from, id, payload),
        };
        self.prune_stale();
        r
    }

    /// The transport says `peer` cannot be reached (dial refused or failed, connection reset,
    /// handshake failed): every send awaiting its answer fails now, without waiting for its
    /// deadline, and the peer is passed over until it answers again or `suspicion_ttl` ends.
    pub fn peer_unreachable(&mut self, now: Duration, peer: Address) {
        if peer == self.core.me {
            return;
        }
        self.core.stats.unreachable += 1;
        self.core.suspect(peer, now);
        for a in self.core.live.take_awaited(&peer) {
            self.with_entry_seq(now, a.id, a.entry_seq, |ctx| {
                ctx.fail(Match::Token(a.token), Outcome::Unreachable)
            });
        }
        self.prune_stale();
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(t) = self.core.timers.pop_due(now) {
            self.fire(now, t);
        }
        self.prune_stale();
    }

    /// The next deadline at which [`Engine::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.core.timers.next_at()
    }

    /// The next output, in the order produced.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.core.outputs.pop_front()
    }

    /// How many inputs (broadcasts, messages, timeouts, unreachable reports) were taken.
    pub fn inputs(&self) -> u64 {
        self.core.inputs
    }

    /// Counters of everything done so far.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.core.me
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// How many message ids are remembered now.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Whether `id` is remembered (delivered, originated or seen) within its age limit.
    pub fn has_seen(&self, id: &MessageId) -> bool {
        self.seen.knows(id)
    }

    /// Bytes of messages held now for resends, clean-up and owed peers (payloads plus
    /// `HELD_ENTRY_BYTES` each, against `Config::held_bytes`).
    pub fn held_bytes(&self) -> usize {
        self.core.budget.held()
    }

    /// Ids evicted for capacity but still remembered (tombstones), never delivered again.
    pub fn tombstones(&self) -> usize {
        self.seen.tombstones()
    }

    /// Timers in the heap, live or stale: bounded by a small multiple of the live ones.
    pub fn timer_count(&self) -> usize {
        self.core.timers.len()
    }

    /// Whether `peer` is currently passed over for failing (SPEC 4).
    pub fn is_suspected(&self, now: Duration, peer: &Address) -> bool {
        self.core.live.is_suspected(peer, now)
    }

    /// How many peers are passed over at `now`.
    pub fn suspected_count(&self, now: Duration) -> usize {
        self.core.live.suspected_count(now)
    }

    /// The ACK deadline a send to `peer` would get now (adaptive, SPEC 4).
    pub fn ack_deadline(&self, peer: &Address) -> Duration {
        self.core.live.deadline(peer)
    }

    /// Counts and returns a refusal of a message no correct peer sends.
    pub(super) fn reject(&mut self, e: EngineError) -> Result<(), EngineError> {
        self.core.stats.rejected += 1;
        Err(e)
    }

    /// Counts and returns a refusal of a copy whose origin is not proven.
    pub(super) fn forged(&mut self, why: &'static str) -> Result<(), EngineError> {
        self.core.stats.forged += 1;
        Err(EngineError::Forged(why))
    }

    /// Runs `f` on message `id`'s state, if remembered, then settles its held bytes: the one
    /// place where a payload no duty needs any more is released.
    pub(super) fn with_entry<T>(
        &mut self,
        now: Duration,
        id: MessageId,
        f: impl FnOnce(&mut Ctx) -> T,
    ) -> Option<T> {
        let e = self.seen.get_mut(&id)?;
        let mut ctx = Ctx {
            node: &mut self.core,
            now,
            id,
            e,
        };
        let out = f(&mut ctx);
        ctx.release_if_idle();
        Some(out)
    }

    /// Like [`Engine::with_entry`], only if the entry is still insertion `seq` (work for an
    /// evicted and re-inserted id is stale).
    fn with_entry_seq(&mut self, now: Duration, id: MessageId, seq: u64, f: impl FnOnce(&mut Ctx)) {
        if self.seen.get(&id).is_some_and(|e| e.seq() == seq) {
            self.with_entry(now, id, f);
        }
    }

    /// Remembers a new id that [`Engine::room_for`] made room for; refused only if the
    /// seen-set and its tombstones are full of ids still within their age limit (forgetting one
    /// could deliver it twice).
    pub(super) fn insert(
        &mut self,
        now: Duration,
        id: MessageId,
        entry: Entry,
    ) -> Result<(), EngineError> {
        let share = self.share_of(&id);
        let ttl = self.core.config.seen_ttl;
        let Ok((_, evicted)) = self.seen.insert(id, entry, share, now, ttl) else {
            self.core.stats.seen_full += 1;
            return Err(EngineError::SeenSetFull);
        };
        if let Some(gone) = evicted {
            self.core.stats.evicted += 1;
            self.core.budget.forget(&gone.held);
        }
        let at = now.saturating_add(ttl);
        if let Some(e) = self.seen.get_mut(&id) {
            self.core.budget.account(&mut e.held);
            let mut ctx = Ctx {
                node: &mut self.core,
                now,
                id,
                e,
            };
            ctx.schedule(at, TimerKind::Expire);
        }
        Ok(())
    }

    /// Whose share of the seen-set `id` counts against.
    fn share_of(&self, id: &MessageId) -> Share {
        match self.core.view.peers().position(&id.origin) {
            Some(_) => Share::Origin(id.origin),
            None => Share::Unlisted,
        }
    }

    /// Whether the seen-set takes a new `id` from `from` (`None`: this node's broadcast, never
    /// refused for its share): refused, and counted, when its origin holds its whole share of
    /// a set under pressure, or when the set and its tombstones are full.
    pub(super) fn room_for(
        &mut self,
        now: Duration,
        id: MessageId,
        from: Option<Address>,
    ) -> Result<(), EngineError> {
        let pressed = self.seen.load() >= self.seen.capacity() / 2;
        if let Some(from) = from {
            let share = self.share_of(&id);
            if pressed && self.seen.held_by(share) as usize >= self.core.config.origin_share {
                self.core.stats.flood += 1;
                return Err(EngineError::Flood {
                    own: from == id.origin,
                });
            }
        }
        if self.seen.is_full(now) {
            self.core.stats.seen_full += 1;
            return Err(EngineError::SeenSetFull);
        }
        Ok(())
    }

    fn fire(&mut self, now: Duration, t: Timer) {
        if self.seen.get(&t.id).is_none_or(|e| e.seq() != t.entry_seq) {
            return;
        }
        match t.kind {
            TimerKind::Ack(token) => {
                self.with_entry(now, t.id, |ctx| ctx.check_ack(token));
            }
            TimerKind::IgywStart => {
                self.with_entry(now, t.id, |ctx| ctx.start_chain());
            }
            TimerKind::IgywWait(token) => {
                self.with_entry(now, t.id, |ctx| {
                    ctx.fail(Match::Token(token), Outcome::Timeout)
                });
            }
            TimerKind::Expire => self.expire(now, t.id),
        }
    }

    /// Only pending work keeps an entry past its age limit: its other timers are stale once
    /// it goes, and do nothing.
    fn expire(&mut self, now: Duration, id: MessageId) {
        let grace = self.core.config.ack_timeout;
        let busy = self.with_entry(now, id, |ctx| {
            let busy = ctx.e.busy();
            if busy {
                let at = ctx.e.ledger.latest_deadline().max(now + grace);
                ctx.schedule(at, TimerKind::Expire);
            }
            busy
        });
        if busy == Some(false) {
            if let Some(gone) = self.seen.remove(&id) {
                self.core.budget.forget(&gone.held);
            }
        }
    }

    /// Ends every input: drops timers that no longer have work (answered, or of evicted
    /// entries), so `poll_timeout` is tight and the heap stays bounded by the seen-set.
    fn prune_stale(&mut self) {
        self.core.inputs += 1;
        let seen = &self.seen;
        self.core.timers.prune(|t| {
            seen.get(&t.id)
                .is_some_and(|e| e.seq() == t.entry_seq && e.wants(t.kind))
        });
    }
}
