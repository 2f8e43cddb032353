//! The simulator's event queue: a binary heap ordered by (time, insertion order).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::wire::BroadcastMessage;

/// What happens at an instant of simulated time.
#[derive(Debug)]
pub(crate) enum EventKind {
    /// `msg` from node `from` arrives at node `to`.
    Arrive {
        from: u32,
        to: u32,
        msg: BroadcastMessage,
    },
    /// Node `node`'s engine asked to be woken now.
    Timer { node: u32 },
    /// Node `from` learns that its message to `to` was refused (`to` is down).
    Refused { from: u32, to: u32 },
    /// Broadcast number `index` starts at the originator.
    Broadcast { index: u32 },
    /// Churn period `period` starts: a fresh set of nodes is down.
    Churn { period: u32 },
}

#[derive(Debug)]
pub(crate) struct Event {
    /// Nanoseconds of simulated time.
    pub at: u64,
    seq: u64,
    pub kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Event {
    // Reversed, so the max-heap pops the earliest event; ties go in insertion order.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Earliest-first events; equal times pop in the order pushed, which keeps runs reproducible.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    heap: BinaryHeap<Event>,
    seq: u64,
}

impl Queue {
    pub fn push(&mut self, at: u64, kind: EventKind) {
        self.seq += 1;
        self.heap.push(Event {
            at,
            seq: self.seq,
            kind,
        });
    }

    pub fn pop(&mut self) -> Option<Event> {
        self.heap.pop()
    }
}
