//! The daisy-chain clean-up, "I got, you want?" (SPEC 6): this node's own chain of offers to
//! its right, the windows it answers for, and the probes of suspected peers (which are IGYW
//! offers too).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rand::RngCore;

use super::duty::clamp_u32;
use super::engine::{Ctx, Engine};
use super::ledger::{Awaiting, Ledger, Match, OfferKind, Outcome};
use super::timers::TimerKind;
use crate::peers::Address;
use crate::wire::{BroadcastMessage, MessageId, Route};

/// Where this node's IGYW chain for one message stands.
#[derive(Clone, Debug)]
pub(super) struct Cleanup {
    started: bool,
    finished: bool,
    /// Unresponsive neighbours skipped in a row.
    skipped: u32,
    /// HAVE answers in a row.
    haves: u32,
    /// The view offset the chain offers to next.
    offset: usize,
    /// The window the next chain offer hands over: doubles after every WANT, so a long run of
    /// nodes that missed the message is filled in logarithmic, not linear, time.
    span: u32,
    /// The largest clean-up window this node has covered (its own view, from itself).
    window: u32,
}

impl Default for Cleanup {
    fn default() -> Self {
        Cleanup {
            started: false,
            finished: false,
            skipped: 0,
            haves: 0,
            offset: 1,
            span: 1,
            window: 1,
        }
    }
}

impl Cleanup {
    /// The chain started and has not finished: it may still need the payload.
    pub fn running(&self) -> bool {
        self.started && !self.finished
    }

    /// Whether the chain's start timer still has work.
    pub fn chain_due(&self, ledger: &Ledger) -> bool {
        !self.finished && !ledger.chain_offered()
    }
}

/// Most ids remembered as asked for; the oldest is forgotten first.
const WANTED_CAPACITY: usize = 1024;

/// Ids this node answered WANT for lately, until when: a second offer of the same id meanwhile
/// gets HAVE, so a node in two overlapping clean-up windows takes the payload once. Each WANT
/// also grants its offerer the window it offered: a clean-up copy covers only a window this
/// node asked that peer for, once.
#[derive(Debug, Default)]
pub(super) struct Wanted {
    until: HashMap<MessageId, Duration>,
    order: VecDeque<(Duration, MessageId)>,
    grants: HashMap<(MessageId, Address), u32>,
    grant_order: VecDeque<(Duration, MessageId, Address)>,
}

impl Wanted {
    /// Whether this node asked for `id` less than an IGYW timeout ago.
    fn lately(&mut self, now: Duration, id: MessageId) -> bool {
        while let Some(&(until, old)) = self.order.front() {
            if until > now && self.order.len() <= WANTED_CAPACITY {
                break;
            }
            self.order.pop_front();
            if self.until.get(&old) == Some(&until) {
                self.until.remove(&old);
            }
        }
        self.until.contains_key(&id)
    }

    fn note(&mut self, id: MessageId, until: Duration) {
        self.until.insert(id, until);
        self.order.push_back((until, id));
    }

    /// `from` may send `id` for the window `[0, span)` of this node's view until `until`.
    fn grant(&mut self, id: MessageId, from: Address, span: u32, until: Duration) {
        self.grants.insert((id, from), span);
        self.grant_order.push_back((until, id, from));
    }

    /// The window granted to `from` for `id`, if any is still open; it is used up.
    pub fn take_grant(&mut self, now: Duration, id: MessageId, from: Address) -> Option<u32> {
        while let Some(&(until, old, peer)) = self.grant_order.front() {
            if until > now && self.grant_order.len() <= WANTED_CAPACITY {
                break;
            }
            self.grant_order.pop_front();
            self.grants.remove(&(old, peer));
        }
        self.grants.remove(&(id, from))
    }
}

impl<R: RngCore> Engine<R> {
    /// An offer of `id` from `from`, for the window `[0, span)` of this node's view.
    pub(super) fn on_igyw(&mut self, now: Duration, from: Address, id: MessageId, span: u32) {
        // With trusted window HAVEs, a holder that released the payload asks for it again when
        // the offer needs serving (a window to cover or a chain to take over). Untrusted, the
        // offerer covers the window itself and a HAVE is all it needs.
        let cfg = self.core.config.clone();
        let known = self.seen.knows(&id) || self.core.wanted.lately(now, id);
        let want = !known
            || (cfg.trust_window_have
                && self.seen.get(&id).is_some_and(|e| {
                    !e.held.holds()
                        && (span.min(clamp_u32(e.facts.view().len() as u64)) > e.cleanup.window
                            || (cfg.cleanup && !e.cleanup.started))
                }));
        if want {
            let until = now.saturating_add(cfg.igyw_timeout);
            if !self.seen.knows(&id) {
                self.core.wanted.note(id, until);
            }
            // The copy comes one round trip after this answer, within the offerer's wait.
            let wait = cfg.igyw_timeout.max(cfg.max_ack_timeout);
            let open = now.saturating_add(wait.saturating_mul(2));
            self.core.wanted.grant(id, from, span, open);
        }
        self.core
            .send(from, BroadcastMessage::IgywReply { id, want });
        // Only a holder of the payload can serve the WANTs its offers may bring.
        if self.seen.get(&id).is_some_and(|e| e.held.holds()) {
            self.with_entry(now, id, |ctx| ctx.answer_for_offer(span));
        }
    }
}

impl Ctx<'_> {
    /// A holder answers for the window it was offered (SPEC 6): nodes past it in the window
    /// may still miss it.
    fn answer_for_offer(&mut self, span: u32) {
        if self.node.config.trust_window_have {
            self.cover_window(span);
        }
        // A holder whose own chain never started (it was filled by clean-up) takes over
        // past its window: a chain that stops at this HAVE must not leave the ring beyond.
        if self.node.config.cleanup && !self.e.cleanup.started {
            let c = &mut self.e.cleanup;
            c.started = true;
            c.offset = c.window.max(1) as usize;
            self.offer_chain();
        }
    }

    /// The reply `want` of `from` to an offer of this node's.
    pub fn on_igyw_reply(&mut self, from: Address, want: bool) {
        let Some(p) = self.settle(Match::Offer { from }, Outcome::Answered) else {
            return;
        };
        let Awaiting::Offer { kind, offset, span } = p.what else {
            return;
        };
        if want {
            self.node.stats.igyw_want += 1;
        } else {
            self.node.stats.igyw_have += 1;
        }
        if want && !self.e.held.holds() {
            // A released payload cannot be sent: the asker gets it from another holder.
            self.e.cleanup.finished |= kind == OfferKind::Chain;
            return;
        }
        match kind {
            OfferKind::Probe { lor } => {
                if want {
                    let m = self.copy(lor, Route::Resend);
                    self.send(from, m);
                }
            }
            OfferKind::Window if want => self.hand_over(from, span),
            OfferKind::Window => {
                self.have_for_window(offset, span);
            }
            OfferKind::Chain if want => self.chain_want(from, offset, span),
            OfferKind::Chain => self.chain_have(offset, span),
        }
    }

    /// Sends the payload after a WANT, for the window `[0, span)` of the asker's view.
    fn hand_over(&mut self, to: Address, span: u32) {
        self.node.stats.cleanup_sends += 1;
        let m = self.copy(span, Route::Cleanup);
        self.send(to, m);
    }

    /// A HAVE vouches for its sender only, not for the window behind it: a black hole would
    /// say it to end the offers to the nodes it starved. Returns where the window ends.
    fn have_for_window(&mut self, offset: usize, span: u32) -> usize {
        if span > 1 && !self.node.config.trust_window_have {
            self.cover_range(offset + 1, span as usize - 1);
            return offset + span as usize;
        }
        offset + 1
    }

    /// A node of the chain missed the message: the run of misses may be long, so the chain
    /// jumps past the window just handed over and doubles the next one.
    fn chain_want(&mut self, to: Address, offset: usize, span: u32) {
        self.hand_over(to, span);
        let n = self.e.facts.view().len();
        let c = &mut self.e.cleanup;
        c.skipped = 0;
        c.haves = 0;
        c.offset = offset.saturating_add(span as usize);
        c.span = span.saturating_mul(2).min(clamp_u32(n as u64));
        self.offer_chain();
    }

    /// A node of the chain had it: not trusted on its own, the rest of the window handed over
    /// is offered by this node, and the chain goes on past it, up to the HAVE limit.
    fn chain_have(&mut self, offset: usize, span: u32) {
        let next = self.have_for_window(offset, span);
        let limit = self.node.config.igyw_have_limit;
        let c = &mut self.e.cleanup;
        c.haves += 1;
        if c.haves >= limit {
            c.finished = true;
        } else {
            c.offset = next;
            c.span = 1;
            self.offer_chain();
        }
    }

    /// The chain's start timer fired.
    pub fn start_chain(&mut self) {
        if self.e.cleanup.chain_due(&self.e.ledger) {
            self.offer_chain();
        }
    }

    /// Sets the chain's start timer, once, if clean-up is on and the message is kept.
    pub fn schedule_igyw(&mut self) {
        let cfg = &self.node.config;
        if cfg.cleanup && !self.e.cleanup.started && !self.e.held.shed() {
            self.e.cleanup.started = true;
            let at = self.now.saturating_add(cfg.cleanup_delay);
            self.schedule(at, TimerKind::IgywStart);
        }
    }

    /// Offers the message to a suspected peer instead of a tree copy: a few bytes that find out
    /// whether it is back; a WANT gets it a leaf copy marked `lor` (deliver, forward nothing).
    pub fn probe(&mut self, to: Address, lor: u32) {
        if self.e.ledger.offered_to(&to) {
            return;
        }
        self.node.stats.probes += 1;
        self.offer(to, OfferKind::Probe { lor }, 0, 1);
    }

    fn offer(&mut self, to: Address, kind: OfferKind, offset: usize, span: u32) {
        // An offer may bring a WANT, which needs the payload a shed entry does not keep.
        if self.e.held.shed() {
            return;
        }
        self.send(to, BroadcastMessage::Igyw { id: self.id, span });
        let at = self.now.saturating_add(self.offer_wait(&to));
        self.await_answer(to, Awaiting::Offer { kind, offset, span }, at);
    }

    /// An offer to `to` got no reply or its peer is unreachable.
    pub fn offer_failed(&mut self, to: Address, kind: OfferKind, offset: usize, span: u32) {
        match kind {
            OfferKind::Probe { .. } => self.owe(to),
            OfferKind::Chain => {
                let limit = self.node.config.igyw_skip_limit;
                let c = &mut self.e.cleanup;
                c.skipped += 1;
                if c.skipped > limit {
                    c.finished = true;
                } else {
                    c.offset = offset + 1;
                    self.offer_chain();
                }
            }
            OfferKind::Window => {
                if span > 1 {
                    self.cover_range(offset + 1, span as usize - 1);
                }
            }
        }
    }

    /// The next offer of this node's own clean-up chain, skipping suspected neighbours.
    fn offer_chain(&mut self) {
        let n = self.e.facts.view().len();
        loop {
            let off = self.e.cleanup.offset;
            let to = match self.e.facts.view().at(off) {
                Some(to) if off < n && to != self.node.me => to,
                _ => {
                    self.e.cleanup.finished = true;
                    return;
                }
            };
            if self.node.live.is_suspected(&to, self.now) {
                let limit = self.node.config.igyw_skip_limit;
                let c = &mut self.e.cleanup;
                c.skipped += 1;
                if c.skipped > limit {
                    c.finished = true;
                    return;
                }
                c.offset = off + 1;
                continue;
            }
            // The window never reaches past the end of the view (back to this node).
            let span = self.e.cleanup.span.min(clamp_u32((n - off) as u64)).max(1);
            self.offer(to, OfferKind::Chain, off, span);
            return;
        }
    }

    /// Answers for the clean-up window `[0, span)` of this node's view: the rest of it, past
    /// this node, is offered in three parts at once, each part's first node answering for it.
    pub fn cover_window(&mut self, span: u32) {
        let n = self.e.facts.view().len();
        let span = span.min(clamp_u32(n as u64));
        if span <= self.e.cleanup.window {
            return;
        }
        let from = self.e.cleanup.window as usize;
        self.e.cleanup.window = span;
        self.cover_range(from, span as usize - from);
    }

    /// Offers the message to the first node of each third of `[offset, offset + len)`.
    fn cover_range(&mut self, offset: usize, len: usize) {
        let mut work = Vec::with_capacity(3);
        super::duty::push_split(&mut work, offset, len);
        while let Some((off, len)) = work.pop() {
            if len == 0 {
                continue;
            }
            let Some(to) = self.other_at(off) else {
                continue;
            };
            if self.node.live.is_suspected(&to, self.now) {
                super::duty::push_split(&mut work, off + 1, len - 1);
                continue;
            }
            self.offer(to, OfferKind::Window, off, clamp_u32(len as u64));
        }
    }
}
