//! The held-byte budget (`Config::held_bytes`): which payloads a node keeps for its duties,
//! and the accounting rules, here and nowhere else.
//!
//! - A message's payload is kept while a duty may send it again (a pending ACK or offer, a
//!   running clean-up chain), and while peers that failed are owed it, but only while half the
//!   budget is free; it is released after every input that leaves it idle
//!   ([`super::engine::Engine::with_entry`]).
//! - A held message counts its payload plus [`HELD_ENTRY_BYTES`] of bookkeeping.
//! - A peer's message that arrives over budget is shed: sent once, untracked, never kept.

use bytes::Bytes;

use super::engine::Ctx;
use super::HELD_ENTRY_BYTES;

/// One message's payload and what it counts against the budget.
#[derive(Clone, Debug)]
pub(super) struct Held {
    /// Kept only while some duty may still send it.
    payload: Bytes,
    /// False once `payload` was released; a later copy brings it back only if its hash matches.
    holds: bool,
    /// Bytes this entry counts against the budget now.
    len: usize,
    /// Peers this message is owed to: they failed while it was sent and get it when heard
    /// from again, so its payload is kept (until its age limit, never longer).
    owed: u32,
    /// Set when the message arrived while the budget was full: it is sent once, without ACKs
    /// or clean-up, so nothing keeps its payload afterwards.
    shed: bool,
}

impl Held {
    /// A payload just received or originated; `shed` if the budget had no room for it.
    pub fn new(payload: Bytes, shed: bool) -> Self {
        Held {
            payload,
            holds: true,
            len: 0,
            owed: 0,
            shed,
        }
    }

    /// The payload (empty once released).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Whether the payload is still kept.
    pub fn holds(&self) -> bool {
        self.holds
    }

    /// Whether the message was shed: no duty may keep it.
    pub fn shed(&self) -> bool {
        self.shed
    }

    /// Bytes counted against the budget now.
    pub fn counted(&self) -> usize {
        self.len
    }

    /// What the message should count given what it holds now.
    pub fn due(&self) -> usize {
        if self.holds {
            self.payload.len() + HELD_ENTRY_BYTES
        } else {
            0
        }
    }
}

/// The node's total held bytes against its limit.
#[derive(Debug)]
pub(super) struct Budget {
    held: usize,
    limit: usize,
}

impl Budget {
    /// An empty budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Budget { held: 0, limit }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether a new message of `len` payload bytes must be shed.
    pub fn must_shed(&self, len: usize) -> bool {
        self.held + len + HELD_ENTRY_BYTES > self.limit
    }

    /// Brings the total up to date with what `h` holds now.
    pub fn account(&mut self, h: &mut Held) {
        let due = h.due();
        self.held = self.held - h.len + due;
        h.len = due;
    }

    /// Miscounts on purpose, so a test can see the invariant check catch it.
    #[cfg(test)]
    pub fn skew_for_test(&mut self, by: usize) {
        self.held += by;
    }

    /// `h`'s message is forgotten (aged out or evicted): what it counted is free again.
    pub fn forget(&mut self, h: &Held) {
        self.held -= h.len;
    }
}

impl Ctx<'_> {
    /// Owed messages keep their payload only while half the budget is free, so that repaying
    /// peers that failed never takes the room ACKed sends need.
    pub fn release_if_idle(&mut self) {
        let busy = self.e.busy();
        let budget = &mut self.node.budget;
        let h = &mut self.e.held;
        let keep_owed = h.owed > 0 && budget.held <= budget.limit / 2;
        if !busy && !keep_owed {
            h.payload = Bytes::new();
            h.holds = false;
        }
        budget.account(h);
    }

    /// Keeps `payload` again: a copy brought back bytes this node released.
    pub fn restore(&mut self, payload: Bytes) {
        let h = &mut self.e.held;
        h.payload = payload;
        h.holds = true;
        self.node.budget.account(h);
    }

    /// Remembers that `to` failed to take this message, keeping its payload for it.
    pub fn owe(&mut self, to: crate::peers::Address) {
        if self.e.held.shed {
            return;
        }
        self.e.held.owed += 1;
        // Past the per-peer bound the oldest is left to clean-up; its entry still goes at its
        // age limit (the count only keeps the payload until then).
        let _dropped = self.node.live.owe(to, self.id, self.e.seq());
    }

    /// `peer`, owed this message, was heard from: it is offered the message again if this
    /// node still holds it.
    pub fn repay(&mut self, peer: crate::peers::Address) {
        if self.e.held.owed == 0 {
            return;
        }
        self.e.held.owed -= 1;
        if self.e.held.holds {
            self.node.stats.repaid += 1;
            let leaf = self.leaf_lor();
            self.probe(peer, leaf);
        }
    }
}
