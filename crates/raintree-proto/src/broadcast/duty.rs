//! The tree duty: who this node sends a message to (SPEC 3), whom it hands a failed part to
//! (SPEC 4), and the redundancy layer's ring pushes (SPEC 5).

use std::sync::Arc;

use super::engine::Ctx;
use super::ledger::Awaiting;
use super::Config;
use crate::peers::{Address, PeerList};
use crate::tree;
use crate::wire::{Gossip, Route, Strategy};

/// A peer list as one node sees it: the list and this node's place in it.
#[derive(Clone, Debug)]
pub(super) struct View {
    peers: Arc<PeerList>,
    my_pos: usize,
}

impl View {
    /// `me`'s view of `peers`, if it is listed.
    pub fn new(peers: Arc<PeerList>, me: &Address) -> Option<Self> {
        let my_pos = peers.position(me)?;
        Some(View { peers, my_pos })
    }

    /// The list.
    pub fn peers(&self) -> &PeerList {
        &self.peers
    }

    /// How many nodes it holds, this one included.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// This node's position in the list.
    pub fn my_pos(&self) -> usize {
        self.my_pos
    }

    /// The node `off` places after this one (wrapping).
    pub fn at(&self, off: usize) -> Option<Address> {
        self.peers.at_offset(self.my_pos, off)
    }
}

/// How far this node's tree duty for one message went.
#[derive(Clone, Debug, Default)]
pub(super) struct TreeState {
    /// Highest level (reference) or range (exact) whose duty is done.
    done: u32,
    /// The first duty ran: redundancy pushes and the clean-up timer are set.
    finished: bool,
    ring_left: bool,
    ring_right: bool,
}

impl TreeState {
    /// A message that has no tree duty (a direct message).
    pub fn without_duty() -> Self {
        TreeState {
            finished: true,
            ..Self::default()
        }
    }

    /// Highest level or range done.
    pub fn done(&self) -> u32 {
        self.done
    }
}

impl Ctx<'_> {
    /// This node's own broadcast: the whole tree below it.
    pub fn originate(&mut self) {
        let n = self.e.facts.view().len() as u64;
        match self.node.config.strategy {
            Strategy::Reference => {
                let top = tree::max_level(n);
                self.e.tree.done = top + 1;
                self.forward_reference(top, 1);
            }
            Strategy::Exact => {
                self.e.tree.done = clamp_u32(n);
                self.forward_exact(n);
            }
        }
        self.finish_tree_duty();
    }

    /// The duty a tree copy marked `lor` asks of this node, once per message at most for
    /// what is new; the first duty also sets up redundancy and clean-up.
    pub fn tree_copy(&mut self, lor: u32, first: bool) {
        let forwarded = self.tree_duty(lor);
        if forwarded || first {
            self.finish_tree_duty();
        }
    }

    /// Forwards the tree levels or range a copy marked `lor` asks of this node.
    /// Returns whether anything new was done.
    fn tree_duty(&mut self, lor: u32) -> bool {
        let n = self.e.facts.view().len() as u64;
        let dup_mode = self.node.config.forward_duplicates;
        let done = self.e.tree.done;
        match self.node.config.strategy {
            Strategy::Reference => {
                // A copy marked above L+1 cannot come from a correct peer; treat it as L+1.
                let level = lor.min(tree::max_level(n) + 1);
                if dup_mode {
                    self.forward_reference(level.saturating_sub(1), 1);
                    self.e.tree.done = done.max(level);
                    return true;
                }
                if level <= done {
                    return false;
                }
                self.e.tree.done = level;
                self.forward_reference(level - 1, done.max(1));
                true
            }
            Strategy::Exact => {
                let range = lor.min(clamp_u32(n));
                if !dup_mode && range <= done {
                    return false;
                }
                if dup_mode || done <= 1 {
                    self.e.tree.done = done.max(range);
                    self.forward_exact(u64::from(range));
                    return true;
                }
                // A re-delegation (a part above this node failed): only the part beyond what
                // this node already covered is new, so only that is handed out, never the
                // whole range again.
                self.e.tree.done = range;
                self.delegate_split(done as usize, (range - done) as usize);
                true
            }
        }
    }

    fn forward_reference(&mut self, top: u32, bottom: u32) {
        let n = self.e.facts.view().len() as u64;
        for level in (bottom.max(1)..=top).rev() {
            for t in tree::reference_targets(n, level) {
                if t != 0 {
                    self.reference_send(t as usize, level);
                }
            }
        }
    }

    /// A reference tree send: a suspected target is probed and replaced by its neighbours at
    /// once, exactly as an ACK timeout would have done (SPEC 4), without the wait.
    fn reference_send(&mut self, off: usize, level: u32) {
        let Some(to) = self.other_at(off) else {
            return;
        };
        if self.skip_suspected(to) {
            self.resend_to_neighbours(off, level);
            return;
        }
        self.tree_send(to, off, level);
    }

    fn forward_exact(&mut self, range: u64) {
        let mut r = range;
        while r > 1 {
            for (offset, len) in tree::exact_delegations(r) {
                self.delegate(offset as usize, len as usize);
            }
            r = tree::exact_parts(r)[0];
        }
    }

    /// Delegates each of the three parts of `[offset, offset + len)`.
    fn delegate_split(&mut self, offset: usize, len: usize) {
        let mut parts = Vec::with_capacity(3);
        push_split(&mut parts, offset, len);
        for (off, l) in parts {
            self.delegate(off, l);
        }
    }

    /// Hands the part `[offset, offset + len)` of the view to its first node. A suspected first
    /// node gets only a probe, and the rest of its part is re-split in three at once, so the
    /// part is covered exactly once among live nodes without waiting for any deadline.
    fn delegate(&mut self, offset: usize, len: usize) {
        // A work list, not recursion: a long run of suspected peers must not deepen the stack.
        let mut work = vec![(offset, len)];
        while let Some((off, len)) = work.pop() {
            if len == 0 {
                continue;
            }
            let Some(to) = self.other_at(off) else {
                continue;
            };
            if self.skip_suspected(to) {
                push_split(&mut work, off + 1, len - 1);
                continue;
            }
            self.tree_send(to, off, clamp_u32(len as u64));
        }
    }

    /// With ACKs on, a suspected tree target gets only a probe (and a leaf copy if it turns out
    /// to be back): true when `to` was passed over that way.
    fn skip_suspected(&mut self, to: Address) -> bool {
        if !(self.node.config.acks && self.node.live.is_suspected(&to, self.now)) {
            return false;
        }
        self.node.stats.skips += 1;
        let leaf = self.leaf_lor();
        self.probe(to, leaf);
        true
    }

    fn tree_send(&mut self, to: Address, offset: usize, lor: u32) {
        let m = self.copy(lor, Route::Tree);
        self.send(to, m);
        if self.node.config.acks && !self.e.held.shed() {
            let at = self.first_check(&to);
            let what = Awaiting::Ack {
                offset,
                lor,
                checks: 0,
            };
            self.await_answer(to, what, at);
        }
    }

    /// A tree send to `to`, the first node of the part at `offset` marked `lor`, failed:
    /// route around the failed node (SPEC 4). It gets the message when heard from again.
    pub fn tree_send_failed(&mut self, to: Address, offset: usize, lor: u32) {
        self.owe(to);
        match self.node.config.strategy {
            Strategy::Reference => self.resend_to_neighbours(offset, lor),
            Strategy::Exact => {
                let len = lor as usize;
                if len <= 1 {
                    // The part held only the failed node: every node of it failed.
                    self.node.stats.give_ups += 1;
                    return;
                }
                self.node.stats.resplits += 1;
                let before = self.node.stats.gossip_sent;
                self.delegate_split(offset + 1, len - 1);
                self.node.stats.resends += self.node.stats.gossip_sent - before;
            }
        }
    }

    /// The reference strategy's replacement (SPEC 4): the failed target's neighbours at view
    /// offsets +1 and -1 get the message one level lower, once, with no ACK expected.
    fn resend_to_neighbours(&mut self, offset: usize, lor: u32) {
        let n = self.e.facts.view().len();
        let level = lor.saturating_sub(1);
        let mut sent = 0;
        let mut last = None;
        for off in [(offset + 1) % n, (offset + n - 1) % n] {
            let Some(to) = self.other_at(off) else {
                continue;
            };
            if last == Some(to) {
                continue;
            }
            last = Some(to);
            let m = self.copy(level, Route::Resend);
            self.send(to, m);
            sent += 1;
        }
        self.node.stats.resends += sent;
        if sent == 0 {
            self.node.stats.give_ups += 1;
        }
    }

    /// Runs once per message after its first tree duty: redundancy pushes and the IGYW timer.
    fn finish_tree_duty(&mut self) {
        if self.e.tree.finished {
            return;
        }
        self.e.tree.finished = true;
        let red = self.node.config.redundancy;
        if red.left() {
            self.ring_push(true);
        }
        if red.right() {
            self.ring_push(false);
        }
        self.schedule_igyw();
    }

    /// A ring copy that was this node's first: it travels on one step, the same way.
    pub fn ring_copy(&mut self, left: bool) {
        self.ring_push(left);
        self.schedule_igyw();
    }

    /// Pushes the message once towards one ring neighbour (SPEC 5).
    fn ring_push(&mut self, left: bool) {
        let t = &mut self.e.tree;
        let done = if left {
            &mut t.ring_left
        } else {
            &mut t.ring_right
        };
        if *done {
            return;
        }
        *done = true;
        let n = self.e.facts.view().len();
        let offset = if left { n.saturating_sub(1) } else { 1 };
        let Some(to) = self.other_at(offset) else {
            return;
        };
        let route = if left {
            Route::RingLeft
        } else {
            Route::RingRight
        };
        let m = self.copy(0, route);
        self.node.stats.redundancy_sends += 1;
        self.send(to, m);
    }

    /// How a leaf copy is marked: delivered, forwarded nowhere.
    pub fn leaf_lor(&self) -> u32 {
        match self.node.config.strategy {
            Strategy::Reference => 0,
            Strategy::Exact => 1,
        }
    }
}

/// The largest level (reference) or range (exact) a correct `from` can put on a tree copy of
/// a broadcast by `origin` to this node on `view`.
pub(super) fn tree_bound(cfg: &Config, view: &View, origin: &Address, from: &Address) -> u32 {
    let peers = view.peers();
    let (n, my_pos) = (peers.len(), view.my_pos());
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

/// Whether a copy `g` of a message whose duty reached `done` may make this node send the
/// payload again.
pub(super) fn may_forward(cfg: &Config, done: u32, g: &Gossip) -> bool {
    match g.route {
        Route::Tree | Route::Resend => cfg.forward_duplicates || g.level_or_range > done,
        Route::Cleanup => true,
        _ => false,
    }
}

/// `x` as a `u32`, saturating.
pub(super) fn clamp_u32(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// Pushes the three consecutive parts of `[offset, offset + len)` (larger first, SPEC 3).
pub(super) fn push_split(work: &mut Vec<(usize, usize)>, offset: usize, len: usize) {
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
