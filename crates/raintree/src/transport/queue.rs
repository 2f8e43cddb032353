//! A peer's outgoing queue: bounded in bytes, control frames ahead of bulk payloads.
//!
//! Pure data: no locks, no I/O. The registry keeps one per peer under the peer's lock, so a
//! queue outlives the connections that drain it.

use std::collections::VecDeque;

use raintree_proto::wire::Message;

/// Queue accounting per message beyond its payload, so empty messages still cost something.
pub(crate) const MESSAGE_OVERHEAD: usize = 64;

/// What a message costs against the byte bound.
pub(crate) fn cost(msg: &Message) -> usize {
    msg.payload().map_or(0, |p| p.len()) + MESSAGE_OVERHEAD
}

/// The queue had no room: `queued` bytes were already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    pub queued: usize,
}

/// Messages waiting for one peer, control (ACKs, probes) ahead of bulk.
#[derive(Debug)]
pub(crate) struct PeerQueue {
    control: VecDeque<Message>,
    bulk: VecDeque<Message>,
    bytes: usize,
    limit: usize,
}

impl PeerQueue {
    /// An empty queue holding at most `limit` bytes (see [`cost`]).
    pub fn new(limit: usize) -> Self {
        Self {
            control: VecDeque::new(),
            bulk: VecDeque::new(),
            bytes: 0,
            limit,
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

    /// Whether `msg` would fit now.
    pub fn check(&self, msg: &Message) -> Result<(), Full> {
        if self.bytes + cost(msg) > self.limit {
            return Err(Full { queued: self.bytes });
        }
        Ok(())
    }

    /// Queues `msg` behind others of its class, or refuses it when it does not fit.
    pub fn push(&mut self, msg: Message) -> Result<(), Full> {
        self.check(&msg)?;
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
        self.bytes = self.bytes.saturating_sub(taken);
    }

    /// Empties the queue; returns how many messages were dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        self.control.clear();
        self.bulk.clear();
        self.bytes = 0;
        n
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

    fn nonce(m: &Message) -> u64 {
        match m {
            Message::Direct { id, .. } => id.nonce,
            Message::Ack { id, .. } => 1000 + id.nonce,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn control_goes_ahead_of_bulk_queued_earlier() {
        let mut q = PeerQueue::new(1 << 20);
        q.push(bulk(1, 10)).unwrap();
        q.push(bulk(2, 10)).unwrap();
        q.push(control(7)).unwrap();
        q.push(bulk(3, 10)).unwrap();
        q.push(control(8)).unwrap();
        let mut out = Vec::new();
        q.take(usize::MAX, &mut out);
        let order: Vec<u64> = out.iter().map(nonce).collect();
        assert_eq!(order, vec![1007, 1008, 1, 2, 3]);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn control_is_taken_even_past_the_budget() {
        let mut q = PeerQueue::new(1 << 20);
        q.push(bulk(1, 500)).unwrap();
        for i in 0..4 {
            q.push(control(i)).unwrap();
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
        let mut q = PeerQueue::new(1 << 20);
        for i in 0..5 {
            q.push(bulk(i, 100)).unwrap();
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
        let mut q = PeerQueue::new(3 * one);
        for i in 0..3 {
            q.push(bulk(i, 1000)).unwrap();
        }
        assert_eq!(q.push(bulk(9, 1000)), Err(Full { queued: 3 * one }));
        // Even a control frame (64 bytes) does not fit a full queue.
        assert!(q.push(control(1)).is_err());
        // A smaller message that fits the remaining room is accepted.
        let mut q2 = PeerQueue::new(one + MESSAGE_OVERHEAD);
        q2.push(bulk(0, 1000)).unwrap();
        q2.push(control(1)).unwrap();
        assert!(q2.push(control(2)).is_err());
        let mut out = Vec::new();
        q.take(one, &mut out);
        assert_eq!(q.bytes(), 2 * one);
        q.push(bulk(10, 1000)).unwrap();
        assert!(q.bytes() <= 3 * one);
    }

    #[test]
    fn clear_counts_and_resets() {
        let mut q = PeerQueue::new(1 << 20);
        q.push(bulk(1, 10)).unwrap();
        q.push(control(1)).unwrap();
        assert_eq!(q.clear(), 2);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }
}
