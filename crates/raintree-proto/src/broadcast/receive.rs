//! A copy arriving from a peer, as a sequence of named steps: its shape, its range, its
//! admission (signature, budget, seen-set), the ACK, the delivery, the payload restored, and
//! the duty its route asks for.

use std::time::Duration;

use bytes::Bytes;
use rand::RngCore;

use super::budget::Held;
use super::duty::{may_forward, tree_bound, TreeState};
use super::engine::{Ctx, Engine};
use super::seen::{Entry, Facts};
use super::{auth, EngineError, Misbehaviour, Output};
use crate::peers::Address;
use crate::wire::{payload_hash, BroadcastMessage, Gossip, MessageId, Route, Strategy};

impl<R: RngCore> Engine<R> {
    /// A gossip copy `g` from `from`.
    pub(super) fn on_gossip(
        &mut self,
        now: Duration,
        from: Address,
        mut g: Gossip,
    ) -> Result<(), EngineError> {
        self.check_shape(&g)?;
        // The ACK echoes what was received, so that a correct sender whose peer list differs
        // from ours (and whose range we cut) still matches it.
        let received = g.level_or_range;
        g.level_or_range = self.bound_range(from, &g)?;
        let first = !self.seen.knows(&g.id);
        if first {
            self.admit(now, from, &mut g, received)?;
        }
        // The sender waits for this even when the copy is a duplicate.
        self.acknowledge(from, &g, received);
        self.deliver_once(first, &g);
        let cfg = self.core.config.clone();
        let restored = self.with_entry(now, g.id, |ctx| {
            if !ctx.e.held.holds() && may_forward(&cfg, ctx.e.tree.done(), &g) {
                ctx.restore_payload(&g.payload)?;
            }
            ctx.follow_route(from, &g, first);
            Ok(())
        });
        restored.unwrap_or(Ok(()))
    }

    /// Refuses a copy of the other strategy or over the payload limit.
    fn check_shape(&mut self, g: &Gossip) -> Result<(), EngineError> {
        let cfg = &self.core.config;
        if g.strategy != cfg.strategy {
            let e = EngineError::StrategyMismatch {
                expected: cfg.strategy,
                got: g.strategy,
            };
            return self.reject(e);
        }
        if g.payload.len() > cfg.max_payload {
            let e = EngineError::PayloadTooLarge {
                len: g.payload.len(),
                max: cfg.max_payload,
            };
            return self.reject(e);
        }
        Ok(())
    }

    /// The level or range this node honours on a tree copy: at most what a correct sender
    /// could give it on this message's view.
    fn bound_range(&mut self, from: Address, g: &Gossip) -> Result<u32, EngineError> {
        let lor = g.level_or_range;
        if !matches!(g.route, Route::Tree | Route::Resend) {
            return Ok(lor);
        }
        let cfg = &self.core.config;
        let view = match self.seen.get(&g.id) {
            Some(e) => e.facts.view(),
            None => &self.core.view,
        };
        let max = tree_bound(cfg, view, &g.id.origin, &from);
        if lor <= max {
            return Ok(lor);
        }
        self.core.stats.impossible += 1;
        if cfg.strategy == Strategy::Reference {
            return Err(EngineError::ImpossibleRange { got: lor, max });
        }
        // The signed message is good, only the range is not: refusing it would starve this
        // node's part as a black hole would, so the part a correct sender could have given
        // is honoured and the rest ignored.
        self.core.outputs.push_back(Output::Misbehaved {
            peer: from,
            reason: Misbehaviour::ImpossibleRange,
        });
        Ok(max)
    }

    /// Verifies a new id's copy and remembers it. Verified before anything is marked seen,
    /// ACKed, forwarded or delivered, so a forgery can neither be delivered nor poison the
    /// seen-set for the real broadcast.
    fn admit(
        &mut self,
        now: Duration,
        from: Address,
        g: &mut Gossip,
        received: u32,
    ) -> Result<(), EngineError> {
        let cfg = self.core.config.clone();
        // The cheap refusals first: a copy the seen-set would refuse anyway costs no hash and
        // no signature check, however often it is sent again.
        if let Err(e) = self.room_for(now, g.id, Some(from)) {
            // A relay of someone else's flood is honest: it gets its ACK, so it does not take
            // this node for failed; the copy goes no further.
            if e == (EngineError::Flood { own: false }) {
                self.acknowledge(from, g, received);
            }
            return Err(e);
        }
        let hash = payload_hash(&g.payload);
        if cfg.verify_signatures {
            self.core.stats.verified += 1;
            if let Err(why) = auth::check(g, &hash) {
                return self.forged(why);
            }
        }
        g.payload = compact(&g.payload);
        // Over budget, what a peer sends is passed on once and not kept: neither a flood
        // of fresh ids nor slow ACKs can make this node hold more payload bytes.
        let shed = self.core.budget.must_shed(g.payload.len());
        if shed {
            self.core.stats.shed += 1;
        }
        let view = self.core.view.clone();
        let facts = Facts::new(view, hash, g.signature.clone(), g.origin_time_us, g.hops);
        let entry = Entry::new(
            facts,
            TreeState::default(),
            Held::new(g.payload.clone(), shed),
        );
        self.insert(now, g.id, entry)
    }

    /// ACKs a tree copy when ACKs are on.
    fn acknowledge(&mut self, to: Address, g: &Gossip, received: u32) {
        if g.route == Route::Tree && self.core.config.acks {
            let ack = BroadcastMessage::Ack {
                id: g.id,
                level_or_range: received,
            };
            self.core.send(to, ack);
        }
    }

    /// Hands a first copy to the application; counts a duplicate.
    fn deliver_once(&mut self, first: bool, g: &Gossip) {
        if !first {
            self.core.stats.duplicates += 1;
            return;
        }
        self.core.stats.deliveries += 1;
        self.core.outputs.push_back(Output::Deliver {
            id: g.id,
            payload: g.payload.clone(),
            origin_time_us: g.origin_time_us,
            hops: g.hops,
        });
    }

    /// A direct (level-0) message: delivered once, never forwarded.
    pub(super) fn on_direct(
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
        let facts = Facts::new(self.core.view.clone(), [0; 32], None, 0, 1);
        let entry = Entry::new(
            facts,
            TreeState::without_duty(),
            Held::new(Bytes::new(), false),
        );
        self.room_for(now, id, Some(from))?;
        self.insert(now, id, entry)?;
        self.core.stats.deliveries += 1;
        self.core.outputs.push_back(Output::Deliver {
            id,
            payload: compact(&payload),
            origin_time_us: 0,
            hops: 1,
        });
        Ok(())
    }
}

impl Ctx<'_> {
    /// Keeps the payload again for a duty this copy brings. The released payload comes back
    /// only byte for byte: a duplicate must never make this node forward bytes other than
    /// those it delivered.
    fn restore_payload(&mut self, payload: &Bytes) -> Result<(), EngineError> {
        if payload_hash(payload) != *self.e.facts.payload_hash() {
            self.node.stats.forged += 1;
            return Err(EngineError::Forged(
                "payload differs from the one delivered",
            ));
        }
        self.restore(compact(payload));
        Ok(())
    }

    /// The duty the copy's route asks of this node.
    fn follow_route(&mut self, from: Address, g: &Gossip, first: bool) {
        match g.route {
            Route::Tree | Route::Resend => self.tree_copy(g.level_or_range, first),
            // A ring copy travels on only from a node that first learns of it that way.
            Route::RingLeft if first => self.ring_copy(true),
            Route::RingRight if first => self.ring_copy(false),
            // The offerer's chain goes on past the window; this node answers for the window,
            // but only one it asked this sender for: an unasked window would make it offer
            // the message to every node of it.
            Route::Cleanup => match self.node.wanted.take_grant(self.now, self.id, from) {
                Some(span) => self.cover_window(span.min(g.level_or_range)),
                None => self.node.stats.unasked_windows += 1,
            },
            _ => {}
        }
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
