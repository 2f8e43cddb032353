//! The broadcast engine: one node's protocol state, driven by events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use rand::RngCore;

use super::liveness::{Awaited, Liveness, LivenessConfig};
use super::seen::{Entry, Offer, OfferKind, PendingAck, SeenSet, Share};
use super::{auth, HELD_ENTRY_BYTES};
use super::{Config, EngineError, Output, Stats};
use crate::peers::{Address, PeerList};
use crate::tree;
use crate::wire::{payload_hash, Gossip, Message, MessageId, Route, Strategy};

/// What a timer does when it fires.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum TimerKind {
    /// Look at the ACK of the pending send with this token: overdue, or not yet.
    Ack(u32),
    /// Start the IGYW chain after the clean-up delay.
    IgywStart,
    /// The IGYW offer with this token got no reply.
    IgywWait(u32),
    /// The seen-set entry reached its age limit.
    Expire,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Timer {
    at: Duration,
    /// Insertion order, so timers with equal deadlines fire reproducibly.
    order: u64,
    id: MessageId,
    entry_seq: u64,
    kind: TimerKind,
}

/// Everything but the seen-set, so an entry and the outputs can be borrowed at once.
#[derive(Debug)]
struct Core {
    config: Arc<Config>,
    me: Address,
    /// Signs this node's broadcasts; boxed, as most simulated engines never originate.
    signer: Option<Box<SigningKey>>,
    peers: Arc<PeerList>,
    my_pos: usize,
    timers: BinaryHeap<Reverse<Timer>>,
    /// Heap size past which stale timers are swept out (twice the live ones after a sweep).
    compact_at: usize,
    timer_order: u64,
    outputs: VecDeque<Output>,
    /// Ids this node answered WANT for lately, until when: a second offer of the same id meanwhile
    /// gets HAVE, so a node in two overlapping clean-up windows takes the payload once.
    wanted: HashMap<MessageId, Duration>,
    wanted_order: VecDeque<(Duration, MessageId)>,
    stats: Stats,
    live: Liveness,
    /// Bytes held by seen-entries with duties, against `Config::held_bytes`.
    held: usize,
}

/// One node's RainTree protocol state: a pure state machine (no I/O, no clock).
///
/// `R` draws the nonces of this node's broadcasts: a CSPRNG in a real node, so that one
/// observed id reveals nothing of the next; a seeded generator in tests and the simulator.
#[derive(Debug)]
pub struct Engine<R = rand::rngs::StdRng> {
    core: Core,
    seen: SeenSet,
    rng: R,
}

/// Why a send awaiting an answer failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Failure {
    /// Its deadline passed.
    Timeout,
    /// The transport reported the peer unreachable.
    Unreachable,
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
        let my_pos = peers.position(&me).ok_or(EngineError::NotInPeerList)?;
        let seen = SeenSet::new(config.seen_capacity);
        let live = Liveness::new(LivenessConfig {
            initial: config.ack_timeout,
            min: config.min_ack_timeout,
            max: config.max_ack_timeout,
            suspicion_ttl: config.suspicion_ttl,
        });
        Ok(Engine {
            core: Core {
                config,
                me,
                signer: None,
                peers,
                my_pos,
                timers: BinaryHeap::new(),
                compact_at: MIN_COMPACT,
                timer_order: 0,
                outputs: VecDeque::new(),
                wanted: HashMap::new(),
                wanted_order: VecDeque::new(),
                stats: Stats::default(),
                live,
                held: 0,
            },
            seen,
            rng,
        })
    }

    /// Signs this node's broadcasts with `key` (SPEC 7); its address must be this node's.
    pub fn with_signing_key(mut self, key: SigningKey) -> Result<Self, EngineError> {
        let address = Address::from_public_key(&key.verifying_key().to_bytes());
        if address != self.core.me {
            return Err(EngineError::WrongSigningKey);
        }
        self.core.signer = Some(Box::new(key));
        Ok(self)
    }

    /// Replaces the peer list; messages already known keep the view they started with.
    pub fn set_peers(&mut self, peers: Arc<PeerList>) -> Result<(), EngineError> {
        let pos = peers
            .position(&self.core.me)
            .ok_or(EngineError::NotInPeerList)?;
        self.core.live.retain_listed(&peers);
        self.core.peers = peers;
        self.core.my_pos = pos;
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
        let id = loop {
            let id = MessageId {
                origin: self.core.me,
                nonce: self.rng.next_u64(),
            };
            if !self.seen.knows(&id) {
                break id;
            }
        };
        let hash = payload_hash(&payload);
        let strategy = self.core.config.strategy;
        let signature = self
            .core
            .signer
            .as_ref()
            .map(|k| auth::sign(k, &id, origin_time_us, strategy, &hash));
        let entry = Entry {
            payload_hash: hash,
            signature,
            ..Entry::new(
                self.core.peers.clone(),
                self.core.my_pos,
                payload,
                origin_time_us,
            )
        };
        self.insert(now, id, entry, None)?;
        self.core.stats.broadcasts += 1;
        let Some(e) = self.seen.get_mut(&id) else {
            return Ok(id);
        };
        let n = e.peers.len() as u64;
        match self.core.config.strategy {
            Strategy::Reference => {
                let top = tree::max_level(n);
                e.done = top + 1;
                self.core.forward_reference(now, id, e, top, 1);
            }
            Strategy::Exact => {
                e.done = clamp_u32(n);
                self.core.forward_exact(now, id, e, n);
            }
        }
        self.core.finish_tree_duty(now, id, e);
        self.core.release_if_idle(e);
        self.prune_stale();
        Ok(id)
    }

    /// Handles a message `msg` received from the peer `from`.
    pub fn handle_message(
        &mut self,
        now: Duration,
        from: Address,
        msg: Message,
    ) -> Result<(), EngineError> {
        // Anything from a peer shows it is up, whatever the message; what it missed while it
        // was failing is offered to it again.
        let owed = self.core.live.heard_from(&from);
        for (id, seq) in owed {
            self.repay(now, from, id, seq);
        }
        let r = match msg {
            Message::Gossip(g) => self.on_gossip(now, from, g),
            Message::Ack { id, level_or_range } => {
                self.on_ack(now, from, id, level_or_range);
                Ok(())
            }
            Message::Igyw { id, span } => {
                self.on_igyw(now, from, id, span);
                Ok(())
            }
            Message::IgywReply { id, want } => {
                self.on_igyw_reply(now, from, id, want);
                Ok(())
            }
            Message::Direct { id, payload } => self.on_direct(now, from, id, payload),
            Message::Request { .. } => self.reject(EngineError::Unexpected("request")),
            Message::Response { .. } => self.reject(EngineError::Unexpected("response")),
            Message::Goodbye { .. } => self.reject(EngineError::Unexpected("goodbye")),
        };
        self.prune_stale();
        r
    }

    /// Offers `peer` the message `id` it failed to take earlier, if this node still holds it.
    fn repay(&mut self, now: Duration, peer: Address, id: MessageId, seq: u64) {
        let Some(e) = self.seen.get_mut(&id) else {
            return;
        };
        if e.seq != seq || e.owed == 0 {
            return;
        }
        e.owed -= 1;
        if e.holds_payload {
            self.core.stats.repaid += 1;
            let leaf = self.core.leaf_lor();
            self.core.probe(now, id, e, peer, leaf);
        }
        self.core.release_if_idle(e);
    }

    /// The transport says `peer` cannot be reached (dial refused or failed, connection reset,
    /// handshake failed): every send awaiting its answer fails now, without waiting for its
    /// deadline, and the peer is passed over until it answers again or `suspicion_ttl` ends.
    pub fn peer_unreachable(&mut self, now: Duration, peer: Address) {
        if peer == self.core.me {
            return;
        }
        self.core.stats.unreachable += 1;
        if self.core.live.suspect(peer, now) {
            self.core.stats.suspicions += 1;
        }
        for a in self.core.live.take_awaited(&peer) {
            let Some(e) = self.seen.get_mut(&a.id) else {
                continue;
            };
            if e.seq != a.entry_seq {
                continue;
            }
            if let Some(i) = e.acks.iter().position(|p| p.token == a.token) {
                let p = e.acks.swap_remove(i);
                self.core.ack_failed(now, a.id, e, p, Failure::Unreachable);
            } else if let Some(i) = e.offers.iter().position(|o| o.token == a.token) {
                let o = e.offers.swap_remove(i);
                self.core.offer_failed(now, a.id, e, o);
            }
            self.core.release_if_idle(e);
        }
        self.prune_stale();
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(Reverse(t)) = self.core.timers.peek().copied() {
            if t.at > now {
                break;
            }
            self.core.timers.pop();
            self.fire(now, t);
        }
        self.prune_stale();
    }

    /// The next deadline at which [`Engine::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.core.timers.peek().map(|Reverse(t)| t.at)
    }

    /// The next output, in the order produced.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.core.outputs.pop_front()
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
        self.core.held
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

    fn reject(&mut self, e: EngineError) -> Result<(), EngineError> {
        self.core.stats.rejected += 1;
        Err(e)
    }

    fn forged(&mut self, why: &'static str) -> Result<(), EngineError> {
        self.core.stats.forged += 1;
        Err(EngineError::Forged(why))
    }

    /// Remembers a new id; refused when the seen-set and its tombstones are full of ids still
    /// within their age limit (forgetting one could deliver it twice).
    /// Remembers a new id; `from` is the peer it came from (`None`: this node's broadcast,
    /// never refused for its share).
    fn insert(
        &mut self,
        now: Duration,
        id: MessageId,
        mut entry: Entry,
        from: Option<Address>,
    ) -> Result<(), EngineError> {
        entry.share = match self.core.peers.position(&id.origin) {
            Some(_) => Share::Origin(id.origin),
            None => Share::Unlisted,
        };
        let pressed = self.seen.load() >= self.seen.capacity() / 2;
        if let Some(from) = from {
            if pressed && self.seen.held_by(entry.share) as usize >= self.core.config.origin_share {
                self.core.stats.flood += 1;
                return Err(EngineError::Flood {
                    own: from == id.origin,
                });
            }
        }
        let ttl = self.core.config.seen_ttl;
        let Ok((_, evicted)) = self.seen.insert(id, entry, now, ttl) else {
            self.core.stats.seen_full += 1;
            return Err(EngineError::SeenSetFull);
        };
        if let Some(gone) = evicted {
            self.core.stats.evicted += 1;
            self.core.held -= gone.held_len;
        }
        let at = now.saturating_add(self.core.config.seen_ttl);
        if let Some(e) = self.seen.get_mut(&id) {
            self.core.account(e);
            self.core.schedule(e, id, at, TimerKind::Expire);
        }
        Ok(())
    }

    fn on_gossip(
        &mut self,
        now: Duration,
        from: Address,
        mut g: Gossip,
    ) -> Result<(), EngineError> {
        let cfg = self.core.config.clone();
        if g.strategy != cfg.strategy {
            return self.reject(EngineError::StrategyMismatch {
                expected: cfg.strategy,
                got: g.strategy,
            });
        }
        if g.payload.len() > cfg.max_payload {
            return self.reject(EngineError::PayloadTooLarge {
                len: g.payload.len(),
                max: cfg.max_payload,
            });
        }
        let id = g.id;
        // The ACK echoes what was received, so that a correct sender whose peer list differs
        // from ours (and whose range we cut) still matches it.
        let received_lor = g.level_or_range;
        if matches!(g.route, Route::Tree | Route::Resend) {
            let (peers, my_pos) = match self.seen.get(&id) {
                Some(e) => (e.peers.clone(), e.my_pos),
                None => (self.core.peers.clone(), self.core.my_pos),
            };
            let max = tree_bound(&cfg, &peers, my_pos, &id.origin, &from);
            if g.level_or_range > max {
                self.core.stats.impossible += 1;
                if cfg.strategy == Strategy::Reference {
                    return Err(EngineError::ImpossibleRange {
                        got: g.level_or_range,
                        max,
                    });
                }
                // The signed message is good, only the range is not: refusing it would starve
                // this node's part as a black hole would, so the part a correct sender could
                // have given is honoured and the rest ignored.
                g.level_or_range = max;
                self.core.outputs.push_back(Output::Misbehaved {
                    peer: from,
                    reason: "impossible range",
                });
            }
        }
        let first = !self.seen.knows(&id);
        // Verified before anything is marked seen, ACKed, forwarded or delivered, so a forgery
        // can neither be delivered nor poison the seen-set for the real broadcast.
        let hash = if first {
            let h = payload_hash(&g.payload);
            if cfg.verify_signatures {
                if let Err(why) = auth::check(&g, &h) {
                    return self.forged(why);
                }
            }
            h
        } else {
            [0; 32]
        };
        if first {
            g.payload = compact(&g.payload);
            // Over budget, what a peer sends is passed on once and not kept: neither a flood
            // of fresh ids nor slow ACKs can make this node hold more payload bytes.
            let shed = self.core.held + g.payload.len() + HELD_ENTRY_BYTES > cfg.held_bytes;
            if shed {
                self.core.stats.shed += 1;
            }
            let entry = Entry {
                hops: g.hops,
                payload_hash: hash,
                signature: g.signature.clone(),
                shed,
                ..Entry::new(
                    self.core.peers.clone(),
                    self.core.my_pos,
                    g.payload.clone(),
                    g.origin_time_us,
                )
            };
            if let Err(e) = self.insert(now, id, entry, Some(from)) {
                // A relay of someone else's flood is honest: it gets its ACK, so it does not
                // take this node for failed; the copy goes no further.
                if e == (EngineError::Flood { own: false }) && g.route == Route::Tree && cfg.acks {
                    let ack = Message::Ack {
                        id,
                        level_or_range: received_lor,
                    };
                    self.core.send(from, ack);
                }
                return Err(e);
            }
        }
        // The sender waits for this even when the copy is a duplicate.
        if g.route == Route::Tree && cfg.acks {
            self.core.send(
                from,
                Message::Ack {
                    id,
                    level_or_range: received_lor,
                },
            );
        }
        if first {
            self.core.stats.deliveries += 1;
            self.core.outputs.push_back(Output::Deliver {
                id,
                payload: g.payload.clone(),
                origin_time_us: g.origin_time_us,
                hops: g.hops,
            });
        } else {
            self.core.stats.duplicates += 1;
        }
        let Some(e) = self.seen.get_mut(&id) else {
            return Ok(());
        };
        if !e.holds_payload && may_forward(&cfg, e, &g) {
            // The released payload comes back only byte for byte: a duplicate must never make
            // this node forward bytes other than those it delivered.
            if payload_hash(&g.payload) != e.payload_hash {
                self.core.stats.forged += 1;
                return Err(EngineError::Forged(
                    "payload differs from the one delivered",
                ));
            }
            e.payload = compact(&g.payload);
            e.holds_payload = true;
            self.core.account(e);
        }
        match g.route {
            Route::Tree | Route::Resend => {
                let forwarded = self.core.tree_duty(now, id, e, g.level_or_range);
                if forwarded || first {
                    self.core.finish_tree_duty(now, id, e);
                }
            }
            // A ring copy travels on only from a node that first learns of it that way.
            Route::RingLeft if first => {
                self.core.ring_push(id, e, true);
                self.core.schedule_igyw(now, id, e);
            }
            Route::RingRight if first => {
                self.core.ring_push(id, e, false);
                self.core.schedule_igyw(now, id, e);
            }
            // The offerer's chain goes on past the window; this node answers for the window.
            Route::Cleanup => self.core.cover_window(now, id, e, g.level_or_range),
            _ => {}
        }
        self.core.release_if_idle(e);
        Ok(())
    }

    fn on_ack(&mut self, now: Duration, from: Address, id: MessageId, level_or_range: u32) {
        let Some(e) = self.seen.get_mut(&id) else {
            return;
        };
        if let Some(i) = e
            .acks
            .iter()
            .position(|p| p.to == from && p.level_or_range == level_or_range)
        {
            let p = e.acks.swap_remove(i);
            self.core.stats.acks_received += 1;
            let a = Awaited {
                id,
                entry_seq: e.seq,
                token: p.token,
            };
            self.core.live.answered(&from, &a);
            self.core.live.sample(from, now.saturating_sub(p.sent_at));
            self.core.release_if_idle(e);
        }
    }

    fn on_igyw(&mut self, now: Duration, from: Address, id: MessageId, span: u32) {
        // With trusted window HAVEs, a holder that released the payload asks for it again when
        // the offer needs serving (a window to cover or a chain to take over). Untrusted, the
        // offerer covers the window itself and a HAVE is all it needs.
        let cleanup = self.core.config.cleanup;
        let trust = self.core.config.trust_window_have;
        let known = self.seen.knows(&id) || self.core.wanted_lately(now, id);
        let want = !known
            || (trust
                && self.seen.get(&id).is_some_and(|e| {
                    !e.holds_payload
                        && (span.min(clamp_u32(e.peers.len() as u64)) > e.igyw.window
                            || (cleanup && !e.igyw.started))
                }));
        if want && !self.seen.knows(&id) {
            self.core.note_wanted(now, id);
        }
        self.core.send(from, Message::IgywReply { id, want });
        // A node that has the message answers for the window it was offered (SPEC 6):
        // nodes past it in the window may still miss it.
        // Only a holder of the payload can serve the WANTs its offers may bring.
        if let Some(e) = self.seen.get_mut(&id).filter(|e| e.holds_payload) {
            if trust {
                self.core.cover_window(now, id, e, span);
            }
            // A holder whose own chain never started (it was filled by clean-up) takes over
            // past its window: a chain that stops at this HAVE must not leave the ring beyond.
            if self.core.config.cleanup && !e.igyw.started {
                e.igyw.started = true;
                e.igyw.offset = e.igyw.window.max(1) as usize;
                self.core.offer_chain(now, id, e);
            }
            self.core.release_if_idle(e);
        }
    }

    fn on_igyw_reply(&mut self, now: Duration, from: Address, id: MessageId, want: bool) {
        let Some(e) = self.seen.get_mut(&id) else {
            return;
        };
        // Only a peer asked may answer, so WANTs cannot be replayed for extra copies.
        let Some(i) = e.offers.iter().position(|o| o.to == from) else {
            return;
        };
        let o = e.offers.swap_remove(i);
        let a = Awaited {
            id,
            entry_seq: e.seq,
            token: o.token,
        };
        self.core.live.answered(&from, &a);
        self.core.live.sample(from, now.saturating_sub(o.sent_at));
        if want {
            self.core.stats.igyw_want += 1;
        } else {
            self.core.stats.igyw_have += 1;
        }
        match o.kind {
            // A released payload cannot be sent: the asker gets it from another holder.
            _ if want && !e.holds_payload => e.igyw.finished |= o.kind == OfferKind::Chain,
            OfferKind::Probe { lor } => {
                if want {
                    let m = self.core.gossip(id, e, lor, Route::Resend);
                    self.core.send(from, m);
                }
            }
            OfferKind::Window => {
                if want {
                    self.core.stats.cleanup_sends += 1;
                    let m = self.core.gossip(id, e, o.span, Route::Cleanup);
                    self.core.send(from, m);
                } else if o.span > 1 && !self.core.config.trust_window_have {
                    // A HAVE vouches for its sender only, not for the window behind it: a
                    // black hole would say it to end the offers to the nodes it starved.
                    self.core
                        .cover_range(now, id, e, o.offset + 1, o.span as usize - 1);
                }
            }
            OfferKind::Chain => {
                if want {
                    self.core.stats.cleanup_sends += 1;
                    let m = self.core.gossip(id, e, o.span, Route::Cleanup);
                    self.core.send(from, m);
                    // A node that missed it: the run of misses may be long, so the chain
                    // jumps past the window just handed over and doubles the next one.
                    let n = e.peers.len();
                    e.igyw.skipped = 0;
                    e.igyw.haves = 0;
                    e.igyw.offset = o.offset.saturating_add(o.span as usize);
                    e.igyw.span = o.span.saturating_mul(2).min(clamp_u32(n as u64));
                    self.core.offer_chain(now, id, e);
                } else {
                    // Not trusted on its own: the rest of the window handed over is offered
                    // by this node, and the chain goes on past it, up to the HAVE limit.
                    let mut next = o.offset + 1;
                    if o.span > 1 && !self.core.config.trust_window_have {
                        self.core
                            .cover_range(now, id, e, o.offset + 1, o.span as usize - 1);
                        next = o.offset + o.span as usize;
                    }
                    e.igyw.haves += 1;
                    if e.igyw.haves >= self.core.config.igyw_have_limit {
                        e.igyw.finished = true;
                    } else {
                        e.igyw.offset = next;
                        e.igyw.span = 1;
                        self.core.offer_chain(now, id, e);
                    }
                }
            }
        }
        self.core.release_if_idle(e);
    }

    fn on_direct(
        &mut self,
        now: Duration,
        from: Address,
        id: MessageId,
        payload: Bytes,
    ) -> Result<(), EngineError> {
        // Unsigned: the transport authenticated the sender, which may only use its own name
        // (else it could plant other origins' ids in the seen-set).
        if id.origin != from {
            return self.forged("direct message in another node's name");
        }
        let max = self.core.config.max_payload;
        if payload.len() > max {
            return self.reject(EngineError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        if self.seen.knows(&id) {
            self.core.stats.duplicates += 1;
            return Ok(());
        }
        let mut entry = Entry::new(self.core.peers.clone(), self.core.my_pos, Bytes::new(), 0);
        entry.tree_done = true;
        entry.hops = 1;
        self.insert(now, id, entry, Some(from))?;
        self.core.stats.deliveries += 1;
        self.core.outputs.push_back(Output::Deliver {
            id,
            payload: compact(&payload),
            origin_time_us: 0,
            hops: 1,
        });
        Ok(())
    }

    fn fire(&mut self, now: Duration, t: Timer) {
        let Some(e) = self.seen.get_mut(&t.id) else {
            return;
        };
        if e.seq != t.entry_seq {
            return;
        }
        match t.kind {
            TimerKind::Ack(token) => self.core.check_ack(now, t.id, e, token),
            TimerKind::IgywStart => {
                if !e.igyw.finished && !e.offers.iter().any(|o| o.kind == OfferKind::Chain) {
                    self.core.offer_chain(now, t.id, e);
                }
            }
            TimerKind::IgywWait(token) => {
                if let Some(i) = e.offers.iter().position(|o| o.token == token) {
                    let o = e.offers.swap_remove(i);
                    let a = Awaited {
                        id: t.id,
                        entry_seq: e.seq,
                        token,
                    };
                    self.core.live.answered(&o.to, &a);
                    if self.core.live.suspect(o.to, now) {
                        self.core.stats.suspicions += 1;
                    }
                    self.core.offer_failed(now, t.id, e, o);
                }
            }
            TimerKind::Expire => {
                // Only pending work keeps an entry past its age limit: its other timers are
                // stale once it goes, and do nothing.
                if e.busy() {
                    let at = e.latest_deadline.max(now + self.core.config.ack_timeout);
                    self.core.schedule(e, t.id, at, TimerKind::Expire);
                } else {
                    if let Some(gone) = self.seen.remove(&t.id) {
                        self.core.held -= gone.held_len;
                    }
                    return;
                }
            }
        }
        if let Some(e) = self.seen.get_mut(&t.id) {
            self.core.release_if_idle(e);
        }
    }

    /// Drops timers at the top of the heap that no longer have work, so `poll_timeout` is tight,
    /// and sweeps the whole heap once stale timers (answered, or of evicted entries) outnumber
    /// live ones: timers belong to their seen-entry, so the heap stays bounded by the seen-set.
    fn prune_stale(&mut self) {
        while let Some(Reverse(t)) = self.core.timers.peek() {
            if timer_live(&self.seen, t) {
                break;
            }
            self.core.timers.pop();
        }
        if self.core.timers.len() > self.core.compact_at {
            let seen = &self.seen;
            let mut timers = std::mem::take(&mut self.core.timers).into_vec();
            timers.retain(|Reverse(t)| timer_live(seen, t));
            self.core.timers = BinaryHeap::from(timers);
            self.core.compact_at = (2 * self.core.timers.len()).max(MIN_COMPACT);
        }
    }
}

/// The smallest heap size at which stale timers are swept.
const MIN_COMPACT: usize = 64;

/// Whether a timer still has work: its entry is the one it was set for and the thing it
/// watches is still pending.
fn timer_live(seen: &SeenSet, t: &Timer) -> bool {
    match seen.get(&t.id) {
        Some(e) if e.seq == t.entry_seq => match t.kind {
            TimerKind::Ack(token) => e.acks.iter().any(|p| p.token == token),
            TimerKind::IgywWait(token) => e.offers.iter().any(|o| o.token == token),
            TimerKind::IgywStart => {
                !e.igyw.finished && !e.offers.iter().any(|o| o.kind == OfferKind::Chain)
            }
            TimerKind::Expire => true,
        },
        _ => false,
    }
}

/// The largest level (reference) or range (exact) a correct `from` can put on a tree copy of
/// a broadcast by `origin` to this node at `my_pos` of `peers`.
fn tree_bound(
    cfg: &Config,
    peers: &PeerList,
    my_pos: usize,
    origin: &Address,
    from: &Address,
) -> u32 {
    let n = peers.len();
    match cfg.strategy {
        Strategy::Reference => tree::max_level(n as u64),
        Strategy::Exact => {
            let Some(f) = peers.position(from) else {
                // An unlisted sender is not this node: it owned at most all of the view but us.
                return clamp_u32(n.saturating_sub(1).max(1) as u64);
            };
            // The sender stands `d` before this node; its range ended within its own view.
            let d = (my_pos + n - f) % n;
            let generic = (n - d) as u64;
            let Some(o) = peers.position(origin) else {
                return clamp_u32(generic);
            };
            let x = ((my_pos + n - o) % n) as u64;
            let s = ((f + n - o) % n) as u64;
            clamp_u32(generic.min(tree::exact_range_bound(n as u64, x, s)))
        }
    }
}

/// Whether a copy of a known id may make this node send the payload again.
fn may_forward(cfg: &Config, e: &Entry, g: &Gossip) -> bool {
    match g.route {
        Route::Tree | Route::Resend => cfg.forward_duplicates || g.level_or_range > e.done,
        Route::Cleanup => true,
        _ => false,
    }
}

fn clamp_u32(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// Most ids remembered as asked for; the oldest is forgotten first.
const WANTED_CAPACITY: usize = 1024;

impl Core {
    /// Whether this node asked for `id` less than an IGYW timeout ago.
    fn wanted_lately(&mut self, now: Duration, id: MessageId) -> bool {
        while let Some(&(until, old)) = self.wanted_order.front() {
            if until > now && self.wanted_order.len() <= WANTED_CAPACITY {
                break;
            }
            self.wanted_order.pop_front();
            if self.wanted.get(&old) == Some(&until) {
                self.wanted.remove(&old);
            }
        }
        self.wanted.contains_key(&id)
    }

    fn note_wanted(&mut self, now: Duration, id: MessageId) {
        let until = now.saturating_add(self.config.igyw_timeout);
        self.wanted.insert(id, until);
        self.wanted_order.push_back((until, id));
    }

    fn send(&mut self, to: Address, message: Message) {
        match &message {
            Message::Gossip(_) => self.stats.gossip_sent += 1,
            Message::Ack { .. } => self.stats.acks_sent += 1,
            Message::Igyw { .. } => self.stats.igyw_sent += 1,
            _ => {}
        }
        self.outputs.push_back(Output::Send { to, message });
    }

    fn schedule(&mut self, e: &mut Entry, id: MessageId, at: Duration, kind: TimerKind) {
        self.timer_order += 1;
        e.latest_deadline = e.latest_deadline.max(at);
        self.timers.push(Reverse(Timer {
            at,
            order: self.timer_order,
            id,
            entry_seq: e.seq,
            kind,
        }));
    }

    fn gossip(&self, id: MessageId, e: &Entry, level_or_range: u32, route: Route) -> Message {
        Message::Gossip(Gossip {
            id,
            level_or_range,
            strategy: self.config.strategy,
            route,
            origin_time_us: e.origin_time_us,
            hops: e.hops.saturating_add(1),
            payload: e.payload.clone(),
            signature: e.signature.clone(),
        })
    }

    /// Forwards the tree levels or range a copy marked `level_or_range` asks of this node.
    /// Returns whether anything new was done.
    fn tree_duty(&mut self, now: Duration, id: MessageId, e: &mut Entry, lor: u32) -> bool {
        let n = e.peers.len() as u64;
        let dup_mode = self.config.forward_duplicates;
        match self.config.strategy {
            Strategy::Reference => {
                // A copy marked above L+1 cannot come from a correct peer; treat it as L+1.
                let level = lor.min(tree::max_level(n) + 1);
                if dup_mode {
                    self.forward_reference(now, id, e, level.saturating_sub(1), 1);
                    e.done = e.done.max(level);
                    return true;
                }
                if level <= e.done {
                    return false;
                }
                let bottom = e.done.max(1);
                e.done = level;
                self.forward_reference(now, id, e, level - 1, bottom);
                true
            }
            Strategy::Exact => {
                let range = lor.min(clamp_u32(n));
                if !dup_mode && range <= e.done {
                    return false;
                }
                if dup_mode || e.done <= 1 {
                    e.done = e.done.max(range);
                    self.forward_exact(now, id, e, u64::from(range));
                    return true;
                }
                // A re-delegation (a part above this node failed): only the part beyond what
                // this node already covered is new, so only that is handed out, never the
                // whole range again.
                let covered = e.done as usize;
                e.done = range;
                let mut parts = Vec::with_capacity(3);
                push_split(&mut parts, covered, range as usize - covered);
                for (off, len) in parts {
                    self.delegate(now, id, e, off, len);
                }
                true
            }
        }
    }

    fn forward_reference(
        &mut self,
        now: Duration,
        id: MessageId,
        e: &mut Entry,
        top: u32,
        bottom: u32,
    ) {
        let n = e.peers.len() as u64;
        for level in (bottom.max(1)..=top).rev() {
            for t in tree::reference_targets(n, level) {
                if t != 0 {
                    self.reference_send(now, id, e, t as usize, level);
                }
            }
        }
    }

    /// A reference tree send: a suspected target is probed and replaced by its neighbours at
    /// once, exactly as an ACK timeout would have done (SPEC 4), without the wait.
    fn reference_send(&mut self, now: Duration, id: MessageId, e: &mut Entry, off: usize, l: u32) {
        let Some(to) = self.other_at(e, off) else {
            return;
        };
        if self.skip_suspected(now, id, e, to) {
            self.resend_to_neighbours(id, e, off, l);
            return;
        }
        self.tree_send(now, id, e, to, off, l);
    }

    fn forward_exact(&mut self, now: Duration, id: MessageId, e: &mut Entry, range: u64) {
        let mut r = range;
        while r > 1 {
            for (offset, len) in tree::exact_delegations(r) {
                self.delegate(now, id, e, offset as usize, len as usize);
            }
            r = tree::exact_parts(r)[0];
        }
    }

    /// Hands the part `[offset, offset + len)` of the view to its first node. A suspected first
    /// node gets only a probe, and the rest of its part is re-split in three at once, so the
    /// part is covered exactly once among live nodes without waiting for any deadline.
    fn delegate(&mut self, now: Duration, id: MessageId, e: &mut Entry, offset: usize, len: usize) {
        // A work list, not recursion: a long run of suspected peers must not deepen the stack.
        let mut work = vec![(offset, len)];
        while let Some((off, len)) = work.pop() {
            if len == 0 {
                continue;
            }
            let Some(to) = self.other_at(e, off) else {
                continue;
            };
            if self.skip_suspected(now, id, e, to) {
                push_split(&mut work, off + 1, len - 1);
                continue;
            }
            self.tree_send(now, id, e, to, off, clamp_u32(len as u64));
        }
    }

    /// The peer at view offset `off` of this message, unless that is this node itself.
    fn other_at(&self, e: &Entry, off: usize) -> Option<Address> {
        e.peers.at_offset(e.my_pos, off).filter(|to| *to != self.me)
    }

    /// With ACKs on, a suspected tree target gets only a probe (and a leaf copy if it turns out
    /// to be back): true when `to` was passed over that way.
    fn skip_suspected(&mut self, now: Duration, id: MessageId, e: &mut Entry, to: Address) -> bool {
        if !(self.acks_on() && self.live.is_suspected(&to, now)) {
            return false;
        }
        self.stats.skips += 1;
        let leaf = self.leaf_lor();
        self.probe(now, id, e, to, leaf);
        true
    }

    fn acks_on(&self) -> bool {
        self.config.acks
    }

    fn tree_send(
        &mut self,
        now: Duration,
        id: MessageId,
        e: &mut Entry,
        to: Address,
        offset: usize,
        lor: u32,
    ) {
        let m = self.gossip(id, e, lor, Route::Tree);
        self.send(to, m);
        if self.config.acks && !e.shed {
            let token = e.token();
            e.acks.push(PendingAck {
                to,
                offset,
                level_or_range: lor,
                token,
                sent_at: now,
                checks: 0,
            });
            self.live.await_answer(
                to,
                Awaited {
                    id,
                    entry_seq: e.seq,
                    token,
                },
            );
            let at = self.first_check(now, &to);
            self.schedule(e, id, at, TimerKind::Ack(token));
        }
    }

    /// When to first look at an answer from `to` sent `now`: its deadline once round trips are
    /// measured, else an early recheck so that the first samples shorten this deadline too.
    fn first_check(&self, now: Duration, to: &Address) -> Duration {
        if self.live.measured() {
            now.saturating_add(self.live.deadline(to))
        } else {
            self.live.recheck_at(now, 0)
        }
    }

    /// An ACK timer fired: the ACK is overdue by today's estimate, or the timer comes back then.
    fn check_ack(&mut self, now: Duration, id: MessageId, e: &mut Entry, token: u32) {
        let Some(i) = e.acks.iter().position(|p| p.token == token) else {
            return;
        };
        let (to, sent_at) = (e.acks[i].to, e.acks[i].sent_at);
        let due = if self.live.measured() {
            sent_at.saturating_add(self.live.deadline(&to))
        } else {
            let initial = sent_at.saturating_add(self.config.ack_timeout);
            if now < initial {
                e.acks[i].checks += 1;
                let at = self.live.recheck_at(sent_at, e.acks[i].checks).min(initial);
                self.schedule(e, id, at.max(now), TimerKind::Ack(token));
                return;
            }
            initial
        };
        if due > now {
            self.schedule(e, id, due, TimerKind::Ack(token));
            return;
        }
        let p = e.acks.swap_remove(i);
        let a = Awaited {
            id,
            entry_seq: e.seq,
            token,
        };
        self.live.answered(&p.to, &a);
        self.ack_failed(now, id, e, p, Failure::Timeout);
    }

    /// A tree send failed: route around the failed node (SPEC 4).
    fn ack_failed(
        &mut self,
        now: Duration,
        id: MessageId,
        e: &mut Entry,
        p: PendingAck,
        f: Failure,
    ) {
        if f == Failure::Timeout {
            self.stats.ack_timeouts += 1;
        }
        if self.live.suspect(p.to, now) {
            self.stats.suspicions += 1;
        }
        // The failed node itself gets the message when it is heard from again.
        self.owe(id, e, p.to);
        match self.config.strategy {
            Strategy::Reference => {
                self.resend_to_neighbours(id, e, p.offset, p.level_or_range);
            }
            Strategy::Exact => {
                let len = p.level_or_range as usize;
                if len <= 1 {
                    // The part held only the failed node: every node of it failed.
                    self.stats.give_ups += 1;
                    return;
                }
                self.stats.resplits += 1;
                let before = self.stats.gossip_sent;
                let mut parts = Vec::with_capacity(3);
                push_split(&mut parts, p.offset + 1, len - 1);
                for (off, l) in parts {
                    self.delegate(now, id, e, off, l);
                }
                self.stats.resends += self.stats.gossip_sent - before;
            }
        }
    }

    /// The reference strategy's replacement (SPEC 4): the failed target's neighbours at view
    /// offsets +1 and -1 get the message one level lower, once, with no ACK expected.
    fn resend_to_neighbours(&mut self, id: MessageId, e: &mut Entry, offset: usize, lor: u32) {
        let n = e.peers.len();
        let level = lor.saturating_sub(1);
        let mut sent = 0;
        let mut last = None;
        for off in [(offset + 1) % n, (offset + n - 1) % n] {
            let Some(to) = self.other_at(e, off) else {
                continue;
            };
            if last == Some(to) {
                continue;
            }
            last = Some(to);
            let m = self.gossip(id, e, level, Route::Resend);
            self.send(to, m);
            sent += 1;
        }
        self.stats.resends += sent;
        if sent == 0 {
            self.stats.give_ups += 1;
        }
    }

    /// Offers the message to a suspected peer instead of a tree copy: a few bytes that find out
    /// whether it is back; a WANT gets it a leaf copy marked `lor` (deliver, forward nothing).
    fn probe(&mut self, now: Duration, id: MessageId, e: &mut Entry, to: Address, lor: u32) {
        if e.offers.iter().any(|o| o.to == to) {
            return;
        }
        self.stats.probes += 1;
        self.offer(now, id, e, to, OfferKind::Probe { lor }, 0, 1);
    }

    #[allow(clippy::too_many_arguments)]
    fn offer(
        &mut self,
        now: Duration,
        id: MessageId,
        e: &mut Entry,
        to: Address,
        kind: OfferKind,
        offset: usize,
        span: u32,
    ) {
        // An offer may bring a WANT, which needs the payload a shed entry does not keep.
        if e.shed {
            return;
        }
        let token = e.token();
        e.offers.push(Offer {
            to,
            kind,
            offset,
            span,
            token,
            sent_at: now,
        });
        self.live.await_answer(
            to,
            Awaited {
                id,
                entry_seq: e.seq,
                token,
            },
        );
        self.send(to, Message::Igyw { id, span });
        let wait = if self.live.measured() {
            self.live.deadline(&to)
        } else {
            self.config.igyw_timeout
        };
        self.schedule(e, id, now.saturating_add(wait), TimerKind::IgywWait(token));
    }

    /// An offer got no reply or its peer is unreachable.
    fn offer_failed(&mut self, now: Duration, id: MessageId, e: &mut Entry, o: Offer) {
        match o.kind {
            OfferKind::Probe { .. } => self.owe(id, e, o.to),
            OfferKind::Chain => {
                e.igyw.skipped += 1;
                if e.igyw.skipped > self.config.igyw_skip_limit {
                    e.igyw.finished = true;
                } else {
                    e.igyw.offset = o.offset + 1;
                    self.offer_chain(now, id, e);
                }
            }
            OfferKind::Window => {
                if o.span > 1 {
                    self.cover_range(now, id, e, o.offset + 1, o.span as usize - 1);
                }
            }
        }
    }

    /// Runs once per message after its first tree duty: redundancy pushes and the IGYW timer.
    fn finish_tree_duty(&mut self, now: Duration, id: MessageId, e: &mut Entry) {
        if e.tree_done {
            return;
        }
        e.tree_done = true;
        let red = self.config.redundancy;
        if red.left() {
            self.ring_push(id, e, true);
        }
        if red.right() {
            self.ring_push(id, e, false);
        }
        self.schedule_igyw(now, id, e);
    }

    fn schedule_igyw(&mut self, now: Duration, id: MessageId, e: &mut Entry) {
        if self.config.cleanup && !e.igyw.started && !e.shed {
            e.igyw.started = true;
            let at = now.saturating_add(self.config.cleanup_delay);
            self.schedule(e, id, at, TimerKind::IgywStart);
        }
    }

    /// Pushes the message once towards one ring neighbour (SPEC 5).
    fn ring_push(&mut self, id: MessageId, e: &mut Entry, left: bool) {
        let done = if left {
            &mut e.ring_left
        } else {
            &mut e.ring_right
        };
        if *done {
            return;
        }
        *done = true;
        let n = e.peers.len();
        let offset = if left { n.saturating_sub(1) } else { 1 };
        let Some(to) = self.other_at(e, offset) else {
            return;
        };
        let route = if left {
            Route::RingLeft
        } else {
            Route::RingRight
        };
        let m = self.gossip(id, e, 0, route);
        self.stats.redundancy_sends += 1;
        self.send(to, m);
    }

    /// The next offer of this node's own clean-up chain, skipping suspected neighbours.
    fn offer_chain(&mut self, now: Duration, id: MessageId, e: &mut Entry) {
        let n = e.peers.len();
        loop {
            let off = e.igyw.offset;
            let to = match e.peers.at_offset(e.my_pos, off) {
                Some(to) if off < n && to != self.me => to,
                _ => {
                    e.igyw.finished = true;
                    return;
                }
            };
            if self.live.is_suspected(&to, now) {
                e.igyw.skipped += 1;
                if e.igyw.skipped > self.config.igyw_skip_limit {
                    e.igyw.finished = true;
                    return;
                }
                e.igyw.offset = off + 1;
                continue;
            }
            // The window never reaches past the end of the view (back to this node).
            let span = e.igyw.span.min(clamp_u32((n - off) as u64)).max(1);
            self.offer(now, id, e, to, OfferKind::Chain, off, span);
            return;
        }
    }

    /// Answers for the clean-up window `[0, span)` of this node's view: the rest of it, past
    /// this node, is offered in three parts at once, each part's first node answering for it.
    fn cover_window(&mut self, now: Duration, id: MessageId, e: &mut Entry, span: u32) {
        let n = e.peers.len();
        let span = span.min(clamp_u32(n as u64));
        if span <= e.igyw.window {
            return;
        }
        let from = e.igyw.window as usize;
        e.igyw.window = span;
        self.cover_range(now, id, e, from, span as usize - from);
    }

    /// Offers the message to the first node of each third of `[offset, offset + len)`.
    fn cover_range(
        &mut self,
        now: Duration,
        id: MessageId,
        e: &mut Entry,
        offset: usize,
        len: usize,
    ) {
        let mut work = Vec::with_capacity(3);
        push_split(&mut work, offset, len);
        while let Some((off, len)) = work.pop() {
            if len == 0 {
                continue;
            }
            let Some(to) = self.other_at(e, off) else {
                continue;
            };
            if self.live.is_suspected(&to, now) {
                push_split(&mut work, off + 1, len - 1);
                continue;
            }
            self.offer(
                now,
                id,
                e,
                to,
                OfferKind::Window,
                off,
                clamp_u32(len as u64),
            );
        }
    }

    /// Drops the payload once no duty can send it again; a later copy brings it back.
    /// Remembers that `to` failed to take message `id`, keeping its payload for it.
    fn owe(&mut self, id: MessageId, e: &mut Entry, to: Address) {
        if e.shed {
            return;
        }
        e.owed += 1;
        // Past the per-peer bound the oldest is left to clean-up; its entry still goes at its
        // age limit (the count only keeps the payload until then).
        let _dropped = self.live.owe(to, id, e.seq);
    }

    /// How a leaf copy is marked: delivered, forwarded nowhere.
    fn leaf_lor(&self) -> u32 {
        match self.config.strategy {
            Strategy::Reference => 0,
            Strategy::Exact => 1,
        }
    }

    /// Owed messages keep their payload only while half the budget is free, so that repaying
    /// peers that failed never takes the room ACKed sends need.
    fn release_if_idle(&mut self, e: &mut Entry) {
        let keep_owed = e.owed > 0 && self.held <= self.config.held_bytes / 2;
        if !e.busy() && !keep_owed {
            e.payload = Bytes::new();
            e.holds_payload = false;
        }
        self.account(e);
    }

    /// Brings the held-payload total up to date with what `e` holds now.
    fn account(&mut self, e: &mut Entry) {
        let now_held = if e.holds_payload {
            e.payload.len() + HELD_ENTRY_BYTES
        } else {
            0
        };
        self.held = self.held - e.held_len + now_held;
        e.held_len = now_held;
    }
}

/// Payloads up to this size are copied out of the buffer they arrived in.
const COMPACT_BELOW: usize = 64 * 1024;

/// A payload this node keeps or delivers, in an allocation of its own when it is small: one
/// decoded from a receive buffer is a slice of it and would keep the whole buffer (many
/// times its size) alive for as long as it is held, so budgets that count payload bytes
/// would undercount. Larger payloads span several Noise messages and are reassembled into a
/// buffer about their own size, so they are kept as they are.
fn compact(p: &Bytes) -> Bytes {
    if p.len() <= COMPACT_BELOW {
        Bytes::copy_from_slice(p)
    } else {
        p.clone()
    }
}

/// Pushes the three consecutive parts of `[offset, offset + len)` (larger first, SPEC 3).
fn push_split(work: &mut Vec<(usize, usize)>, offset: usize, len: usize) {
    if len == 0 {
        return;
    }
    let [a, b, c] = tree::exact_parts(len as u64).map(|x| x as usize);
    // Popped last-in first-out, so push the last part first to send in view order.
    for (off, l) in [(offset + a + b, c), (offset + a, b), (offset, a)] {
        if l > 0 {
            work.push((off, l));
        }
    }
}
