//! Queueing a message for a peer, dialling it if no connection serves it.

use std::sync::Arc;

use raintree_proto::wire::Message;
use raintree_proto::Address;

use super::{Inner, PeerState};
use crate::transport::queue::Full;
use crate::transport::{lock, SendError};

impl SendError {
    /// The label its drop is counted under.
    fn label(&self) -> &'static str {
        match self {
            SendError::UnknownPeer(_) => "unknown_peer",
            SendError::QueueFull { .. } => "queue_full",
            SendError::TotalQueueFull { .. } => "total_queue_full",
            SendError::PayloadTooLarge { .. } => "payload_too_large",
            SendError::OutboundLimit => "outbound_limit",
            SendError::Shutdown => "shutdown",
            SendError::Reserved(_) => "reserved",
            SendError::Banned(_) => "banned",
        }
    }
}

impl Inner {
    /// Queues a message handed in by the application. A forged Goodbye would close the peer's
    /// side and a stray Request or Response would confuse its correlation table, so those kinds
    /// are refused (and counted) here; only the transport's own paths send them.
    pub(crate) fn enqueue_app(
        self: &Arc<Self>,
        peer: Address,
        msg: Message,
    ) -> Result<(), SendError> {
        match msg {
            Message::Request { .. } | Message::Response { .. } | Message::Goodbye { .. } => {
                let e = SendError::Reserved(msg.kind());
                self.metrics().drop_msg(e.label());
                Err(e)
            }
            _ => self.enqueue(peer, msg, |_| {}),
        }
    }

    /// Queues `msg` for `peer` and dials if no connection serves it; `register` runs under
    /// the peer's lock just before the push (requests record their waiter there).
    pub(super) fn enqueue(
        self: &Arc<Self>,
        peer: Address,
        msg: Message,
        register: impl FnOnce(&mut PeerState),
    ) -> Result<(), SendError> {
        let r = self.try_enqueue(peer, msg, register);
        if let Err(e) = &r {
            self.metrics().drop_msg(e.label());
        }
        r
    }

    fn try_enqueue(
        self: &Arc<Self>,
        peer: Address,
        msg: Message,
        register: impl FnOnce(&mut PeerState),
    ) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Shutdown);
        }
        if let Some(p) = msg.payload() {
            if p.len() > self.config.max_payload {
                return Err(SendError::PayloadTooLarge {
                    len: p.len(),
                    max: self.config.max_payload,
                });
            }
        }
        if self.is_banned(&peer) {
            return Err(SendError::Banned(peer));
        }
        let mut st = lock(&self.state);
        // The peer book is consulted only for a peer not yet seen or not connected, so a send
        // on a live connection takes no lock of the book.
        let p = match st.peers.get(&peer) {
            Some(p) => Arc::clone(p),
            None if self.listen_addr(&peer).is_some() => self.peer_entry(&mut st, peer),
            None => return Err(SendError::UnknownPeer(peer)),
        };
        let mut q = p.lock();
        let full = |f: Full| match f {
            Full::Peer { queued } => SendError::QueueFull {
                peer,
                queued,
                limit: self.config.queue_bytes,
            },
            Full::Total { used, limit } => SendError::TotalQueueFull { used, limit },
        };
        // Released by every early return below; the queue takes it over on push.
        let reserved = q.queue.check(&msg).map_err(full)?;
        let dial = if q.current.is_none() && !q.dialing {
            Some(self.claim_dial(&mut st, &mut q, peer)?)
        } else {
            None
        };
        drop(st);
        register(&mut q);
        // A writer with messages waiting was woken for the first of them and takes again until
        // the queue is empty, so only a push onto an empty queue needs to wake it.
        let was_empty = q.queue.len() == 0;
        q.queue.push(msg, reserved).map_err(full)?;
        if let (true, Some(c)) = (was_empty, &q.current) {
            c.wake.notify_one();
        }
        drop(q);
        if let Some(dial) = dial {
            self.start_dial(p, dial);
        }
        Ok(())
    }
}
