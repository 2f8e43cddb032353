//! A peer's outgoing queue: bounded in bytes, control frames ahead of bulk payloads.
//!
//! Pure data: no locks, no I/O. The registry keeps one per peer under the peer's lock, so a
//! queue outlives the connections that drain it. Every queue also draws on one [`Budget`]
//! shared by all peers, so the total stays bounded however many peers there are.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use raintree_proto::wire::Message;

/// Queue accounting per message beyond its payload, so empty messages still cost something.
pub(crate) const MESSAGE_OVERHEAD: usize = 64;

/// What a message costs against the byte bound.
pub(crate) fn cost(msg: &Message) -> usize {
    msg.payload().map_or(0, |p| p.len()) + MESSAGE_OVERHEAD
}

/// Why a message did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// This peer's queue had `queued` bytes waiting.
    Peer { queued: usize },
    /// All queues together held `used` bytes of the shared `limit`.
    Total { used: usize, limit: usize },
}

/// Bytes queued across every peer, against one limit.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Takes `n` bytes, released when the [`Reservation`] drops unless a queue takes it over.
    pub fn reserve(self: &Arc<Self>, n: usize) -> Result<Reservation, Full> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= self.limit).then_some(u + n)
            })
            .map_err(|used| Full::Total {
                used,
                limit: self.limit,
            })?;
        Ok(Reservation {
            budget: Arc::clone(self),
            bytes: n,
        })
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Bytes taken from a [`Budget`] for one message on its way into a queue.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Messages waiting for one peer, control (ACKs, probes) ahead of bulk.
#[derive(Debug)]
pub(crate) struct PeerQueue {
    control: VecDeque<Message>,
    bulk: VecDeque<Message>,
    bytes: usize,
    limit: usize,
    budget: Arc<Budget>,
}

impl PeerQueue {
    /// An empty queue holding at most `limit` bytes (see [`cost`]) of the shared `budget`.
    pub fn new(limit: usize, budget: Arc<Budget>) -> Self {
        Self {
            control: VecDeque::new(),
            bulk: VecDeque::new(),
            bytes: 0,
            limit,
            budget,
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.control.len() + self.bulk.len()
    }

    /// Bytes waiting, as counted against the limit.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `msg` fits this peer's queue, and if so its bytes reserved from the shared
    /// budget (pass them to [`PeerQueue::push`]).
    pub fn check(&self, msg: &Message) -> Result<Reservation, Full> {
        if self.bytes + cost(msg) > self.limit {
            return Err(Full::Peer { queued: self.bytes });
        }
        self.budget.reserve(cost(msg))
    }

    /// Queues `msg` behind others of its class on bytes `reserved` by [`PeerQueue::check`].
    pub fn push(&mut self, msg: Message, reserved: Reservation) -> Result<(), Full> {
        if self.bytes + cost(&msg) > self.limit {
            return Err(Full::Peer { queued: self.bytes });
        }
        debug_assert_eq!(reserved.bytes, cost(&msg));
        // The queue holds the bytes now; `take` and `clear` give them back.
        std::mem::forget(reserved);
        self.bytes += cost(&msg);
        if msg.is_control() {
            self.control.push_back(msg);
        } else {
            self.bulk.push_back(msg);
        }
        Ok(())
    }

    /// Moves every control message, then bulk messages until `budget` bytes are taken, into
    /// `out`. Control never waits for a budget: an ACK must not sit behind a large block.
    pub fn take(&mut self, budget: usize, out: &mut Vec<Message>) {
        let mut taken = 0;
        while let Some(m) = self.control.pop_front() {
            taken += cost(&m);
            out.push(m);
        }
        while taken < budget {
            let Some(m) = self.bulk.pop_front() else {
                break;
            };
            taken += cost(&m);
            out.push(m);
        }
        let taken = taken.min(self.bytes);
        self.bytes -= taken;
        self.budget.release(taken);
    }

    /// Empties the queue; returns how many messages were dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        self.control.clear();
        self.bulk.clear();
        self.budget.release(self.bytes);
        self.bytes = 0;
        n
    }
}

impl Drop for PeerQueue {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raintree_proto::wire::MessageId;
    use raintree_proto::Address;

    fn bulk(nonce: u64, len: usize) -> Message {
        Message::Direct {
            id: MessageId {
                origin: Address([1; 20]),
                nonce,
            },
            payload: Bytes::from(vec![0u8; len]),
        }
    }

    fn control(n: u64) -> Message {
        Message::Ack {
            id: MessageId {
                origin: Address([2; 20]),
                nonce: n,
            },
            level_or_range: 0,
        }
    }

    fn queue(limit: usize) -> PeerQueue {
        PeerQueue::new(limit, Budget::new(usize::MAX))
    }

    trait Push {
        fn add(&mut self, m: Message) -> Result<(), Full>;
    }

    impl Push for PeerQueue {
        fn add(&mut self, m: Message) -> Result<(), Full> {
            let r = self.check(&m)?;
            self.push(m, r)
        }
    }

    fn nonce(m: &Message) -> u64 {
        match m {
            Message::Direct { id, .. } => id.nonce,
            Message::Ack { id, .. } => 1000 + id.nonce,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn control_goes_ahead_of_bulk_queued_earlier() {
        let mut q = queue(1 << 20);
        q.add(bulk(1, 10)).unwrap();
        q.add(bulk(2, 10)).unwrap();
        q.add(control(7)).unwrap();
        q.add(bulk(3, 10)).unwrap();
        q.add(control(8)).unwrap();
        let mut out = Vec::new();
        q.take(usize::MAX, &mut out);
        let order: Vec<u64> = out.iter().map(nonce).collect();
        assert_eq!(order, vec![1007, 1008, 1, 2, 3]);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn control_is_taken_even_past_the_budget() {
        let mut q = queue(1 << 20);
        q.add(bulk(1, 500)).unwrap();
        for i in 0..4 {
            q.add(control(i)).unwrap();
        }
        let mut out = Vec::new();
        // A budget smaller than the control frames still takes every one of them, and no bulk.
        q.take(10, &mut out);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|m| m.is_control()));
        assert_eq!(q.len(), 1);
        assert_eq!(q.bytes(), cost(&bulk(1, 500)));
    }

    #[test]
    fn bulk_is_taken_up_to_the_budget_in_order() {
        let mut q = queue(1 << 20);
        for i in 0..5 {
            q.add(bulk(i, 100)).unwrap();
        }
        let mut out = Vec::new();
        // One message crosses the budget, then taking stops.
        q.take(2 * cost(&bulk(0, 100)) + 1, &mut out);
        assert_eq!(out.iter().map(nonce).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(q.bytes(), 2 * cost(&bulk(0, 100)));
    }

    #[test]
    fn byte_bound_holds_and_frees_as_taken() {
        let one = cost(&bulk(0, 1000));
        let mut q = queue(3 * one);
        for i in 0..3 {
            q.add(bulk(i, 1000)).unwrap();
        }
        assert_eq!(q.add(bulk(9, 1000)), Err(Full::Peer { queued: 3 * one }));
        // Even a control frame (64 bytes) does not fit a full queue.
        assert!(q.add(control(1)).is_err());
        // A smaller message that fits the remaining room is accepted.
        let mut q2 = queue(one + MESSAGE_OVERHEAD);
        q2.add(bulk(0, 1000)).unwrap();
        q2.add(control(1)).unwrap();
        assert!(q2.add(control(2)).is_err());
        let mut out = Vec::new();
        q.take(one, &mut out);
        assert_eq!(q.bytes(), 2 * one);
        q.add(bulk(10, 1000)).unwrap();
        assert!(q.bytes() <= 3 * one);
    }

    #[test]
    fn the_shared_budget_bounds_every_queue_together() {
        let one = cost(&bulk(0, 1000));
        let budget = Budget::new(3 * one);
        let mut a = PeerQueue::new(10 * one, Arc::clone(&budget));
        let mut b = PeerQueue::new(10 * one, Arc::clone(&budget));
        a.add(bulk(1, 1000)).unwrap();
        a.add(bulk(2, 1000)).unwrap();
        b.add(bulk(3, 1000)).unwrap();
        assert_eq!(
            b.add(bulk(4, 1000)),
            Err(Full::Total {
                used: 3 * one,
                limit: 3 * one
            })
        );
        // A reservation that is never pushed gives its bytes back.
        drop(budget.reserve(0).unwrap());
        let mut out = Vec::new();
        a.take(one, &mut out);
        assert_eq!(budget.used(), 2 * one);
        b.add(bulk(4, 1000)).unwrap();
        assert_eq!(b.clear(), 2);
        assert_eq!(budget.used(), one);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn clear_counts_and_resets() {
        let mut q = queue(1 << 20);
        q.add(bulk(1, 10)).unwrap();
        q.add(control(1)).unwrap();
        assert_eq!(q.clear(), 2);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }
}
