//! The engine's timers: deadlines that belong to one seen-entry, fired in order. A timer
//! whose work is gone stays in the heap until swept, so the heap is bounded by the live
//! timers, which are bounded by the seen-set.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::wire::MessageId;

/// What a timer does when it fires.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(super) enum TimerKind {
    /// Look at the ACK of the pending send with this token: overdue, or not yet.
    Ack(u32),
    /// Start the IGYW chain after the clean-up delay.
    IgywStart,
    /// The IGYW offer with this token got no reply.
    IgywWait(u32),
    /// The seen-entry reached its age limit.
    Expire,
}

/// One deadline of one seen-entry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) struct Timer {
    pub at: Duration,
    /// Insertion order, so timers with equal deadlines fire reproducibly.
    order: u64,
    pub id: MessageId,
    pub entry_seq: u64,
    pub kind: TimerKind,
}

/// The smallest heap size at which stale timers are swept.
const MIN_COMPACT: usize = 64;

/// A min-heap of timers with a sweep of stale ones.
#[derive(Debug)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    /// Heap size past which stale timers are swept out (twice the live ones after a sweep).
    compact_at: usize,
    order: u64,
}

impl Timers {
    /// No timers.
    pub fn new() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            compact_at: MIN_COMPACT,
            order: 0,
        }
    }

    /// Sets a timer of `kind` at `at` for the entry `(id, entry_seq)`.
    pub fn push(&mut self, at: Duration, id: MessageId, entry_seq: u64, kind: TimerKind) {
        self.order += 1;
        self.heap.push(Reverse(Timer {
            at,
            order: self.order,
            id,
            entry_seq,
            kind,
        }));
    }

    /// The earliest deadline, live or stale.
    pub fn next_at(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// Takes the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<Timer> {
        if self.next_at()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(t)| t)
    }

    /// Timers in the heap, live or stale.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Forgets every timer on purpose, so a test can see the invariant check catch it.
    #[cfg(test)]
    pub fn clear_for_test(&mut self) {
        self.heap.clear();
    }

    /// Every timer, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Timer> {
        self.heap.iter().map(|Reverse(t)| t)
    }

    /// Drops stale timers at the top, so the next deadline is a live one, and sweeps the whole
    /// heap once stale timers outnumber live ones.
    pub fn prune(&mut self, live: impl Fn(&Timer) -> bool) {
        while let Some(Reverse(t)) = self.heap.peek() {
            if live(t) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > self.compact_at {
            let mut timers = std::mem::take(&mut self.heap).into_vec();
            timers.retain(|Reverse(t)| live(t));
            self.heap = BinaryHeap::from(timers);
            self.compact_at = (2 * self.heap.len()).max(MIN_COMPACT);
        }
    }
}
