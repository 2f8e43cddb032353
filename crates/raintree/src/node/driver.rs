//! The node's single driver task: the only owner of the protocol engine.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use raintree_proto::broadcast::{Engine, EngineError, Misbehaviour, Stats};
use raintree_proto::drive::{self, Input, Sink};
use raintree_proto::wire::{BroadcastMessage, MessageId};
use raintree_proto::Address;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::deliveries::{delivery_cost, Unread};
use super::{unix_micros, Command, Delivery, IncomingRequest};
use crate::metrics::NodeMetrics;
use crate::transport::{Event, Events, Offence, Transport};

pub(super) struct Driver {
    pub engine: Engine,
    pub transport: Transport,
    pub events: Events,
    pub commands: mpsc::Receiver<Command>,
    pub deliveries: mpsc::Sender<Delivery>,
    pub requests: mpsc::Sender<IncomingRequest>,
    pub metrics: NodeMetrics,
    pub stats: watch::Sender<Stats>,
    pub stop: CancellationToken,
    /// Bytes of accepted deliveries not yet read by the application, here and in its
    /// stream, before the node stops reading from the network.
    pub delivery_buffer_bytes: usize,
    /// What the application's stream holds.
    pub unread: std::sync::Arc<Unread>,
}

impl Driver {
    pub async fn run(mut self) {
        let start = Instant::now();
        let mut last = Stats::default();
        let mut waiting = DeliveryBuffer::new(self.unread.clone());
        // A handle of its own, so waiting for room does not borrow the driver.
        let deliveries = self.deliveries.clone();
        loop {
            // Overdue timers first on every turn, so a steady stream of events cannot delay
            // ACK deadlines or clean-up offers.
            drive::fire_due(&mut self.engine, start.elapsed());
            // Publish the step's counters before its outputs leave, so anyone who sees an
            // effect of this step (a delivery downstream) also sees the counters behind it.
            let stats = self.engine.stats();
            self.metrics.sync(&mut last, stats);
            self.stats.send_replace(stats.clone());
            let mut out = Outputs {
                transport: &self.transport,
                metrics: &self.metrics,
                waiting: &mut waiting,
            };
            drive::drain(&mut self.engine, &mut out);
            waiting.push_ready(&deliveries);
            // Past the byte bound the node stops reading the network (peers see backpressure),
            // but its timers, ACK deadlines and commands still run.
            let reading = waiting.bytes + self.unread.bytes() <= self.delivery_buffer_bytes;
            let deadline = self.engine.poll_timeout().map(|d| start + d);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => {
                    // Every delivery here was ACKed already: hand them all to the application
                    // (without making shutdown wait for it to read them).
                    waiting.hand_over(deliveries.clone());
                    break;
                }
                _ = sleep_until(deadline) => {}
                // Nothing else wakes a node that stopped reading with its buffer empty.
                _ = self.unread.read(), if !reading => {}
                permit = deliveries.reserve(), if !waiting.is_empty() => match permit {
                    Ok(permit) => waiting.send_one(permit),
                    // The application dropped its stream: nobody will read these.
                    Err(_) => waiting.clear(),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(start.elapsed(), cmd),
                    None => break,
                },
                ev = self.events.recv(), if reading => match ev {
                    Some(ev) => self.event(start.elapsed(), ev),
                    None => break,
                },
            }
        }
    }

    fn command(&mut self, now: Duration, cmd: Command) {
        match cmd {
            Command::Broadcast { payload, reply } => {
                let input = Input::Broadcast {
                    payload,
                    origin_time_us: unix_micros(),
                };
                // A broadcast is answered with its id or the reason it was refused.
                if let Some(r) = drive::apply(&mut self.engine, now, input).transpose() {
                    let _ = reply.send(r);
                }
            }
            Command::SetPeers(list) => {
                self.metrics.set_peers(list.len());
                if let Err(e) = drive::apply(&mut self.engine, now, Input::SetPeers(list)) {
                    tracing::warn!(error = %e, "peer list refused");
                }
            }
        }
    }

    fn event(&mut self, now: Duration, ev: Event) {
        match ev {
            Event::Message { peer, message } => {
                let kind = message.kind();
                let message = match BroadcastMessage::try_from(message) {
                    Ok(m) => m,
                    Err(_) => {
                        // The transport hands on only what it does not handle itself.
                        tracing::debug!(%peer, kind, "transport message where a broadcast was due");
                        self.transport.penalise(peer, Offence::Refused);
                        return;
                    }
                };
                let input = Input::Message {
                    from: peer,
                    message,
                };
                if let Err(e) = drive::apply(&mut self.engine, now, input) {
                    tracing::debug!(%peer, kind, error = %e, "message refused");
                    if let Some(o) = offence(&e) {
                        self.transport.penalise(peer, o);
                    }
                }
            }
            Event::Request {
                peer,
                payload,
                responder,
            } => {
                let req = IncomingRequest {
                    peer,
                    payload,
                    responder,
                };
                if self.requests.try_send(req).is_err() {
                    // Dropping the responder lets the requester time out instead of waiting on us.
                    tracing::debug!(%peer, "request dropped: application queue full");
                }
            }
            Event::ConnectionUp { peer, inbound } => {
                tracing::debug!(%peer, inbound, "connection up");
            }
            Event::ConnectionDown { peer, reason } => {
                let lost = reason.peer_lost();
                tracing::debug!(%peer, %reason, lost, "connection down");
                if lost {
                    // Sends awaiting this peer's answer fail now instead of at their deadline.
                    let _ = drive::apply(&mut self.engine, now, Input::Unreachable(peer));
                }
            }
            Event::Refused { remote, reason } => {
                tracing::info!(%remote, ?reason, "connection refused");
            }
            Event::Banned { peer, ban } => {
                tracing::info!(%peer, ?ban, "peer banned");
                // Its subtree is routed around like a failed peer's until the ban ends.
                let _ = drive::apply(&mut self.engine, now, Input::Unreachable(peer));
            }
        }
    }
}

/// Where the engine's outputs go: sends to the transport (fire-and-forget), deliveries to the
/// buffer that feeds the application. Never waits, so the protocol never waits on the
/// application.
struct Outputs<'a> {
    transport: &'a Transport,
    metrics: &'a NodeMetrics,
    waiting: &'a mut DeliveryBuffer,
}

impl Sink for Outputs<'_> {
    fn send(&mut self, to: Address, message: BroadcastMessage) {
        self.transport.write(to, message.into());
    }

    fn misbehaved(&mut self, peer: Address, reason: Misbehaviour) {
        tracing::debug!(%peer, %reason, "peer misbehaved");
        let o = match reason {
            Misbehaviour::ImpossibleRange => Offence::RangeCut,
        };
        self.transport.penalise(peer, o);
    }

    fn deliver(&mut self, id: MessageId, payload: Bytes, origin_time_us: u64, hops: u32) {
        let now = unix_micros();
        if origin_time_us > 0 && now >= origin_time_us {
            self.metrics
                .observe_latency((now - origin_time_us) as f64 / 1_000_000.0);
        }
        self.waiting.push(Delivery {
            id,
            payload,
            origin_time_us,
            hops,
        });
    }
}

/// Deliveries accepted by the protocol that the application's stream has no room for yet,
/// in order.
struct DeliveryBuffer {
    queue: VecDeque<Delivery>,
    bytes: usize,
    unread: std::sync::Arc<Unread>,
}

impl DeliveryBuffer {
    fn new(unread: std::sync::Arc<Unread>) -> Self {
        DeliveryBuffer {
            queue: VecDeque::new(),
            bytes: 0,
            unread,
        }
    }

    fn push(&mut self, d: Delivery) {
        self.bytes += delivery_cost(&d);
        self.queue.push_back(d);
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }

    fn send_one(&mut self, permit: mpsc::Permit<'_, Delivery>) {
        if let Some(d) = self.queue.pop_front() {
            self.bytes -= delivery_cost(&d);
            self.unread.add(&d);
            permit.send(d);
        }
    }

    /// Feeds the rest to the application from a task of its own that ends when every
    /// delivery is read or the application drops its stream; the stream ends after them.
    fn hand_over(&mut self, tx: mpsc::Sender<Delivery>) {
        self.push_ready(&tx);
        if self.is_empty() {
            return;
        }
        let rest = std::mem::take(&mut self.queue);
        self.bytes = 0;
        let unread = self.unread.clone();
        tokio::spawn(async move {
            for d in rest {
                unread.add(&d);
                if tx.send(d).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Moves deliveries into the application's channel while it has room.
    fn push_ready(&mut self, tx: &mpsc::Sender<Delivery>) {
        while !self.queue.is_empty() {
            match tx.try_reserve() {
                Ok(permit) => self.send_one(permit),
                Err(mpsc::error::TrySendError::Full(())) => return,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    self.clear();
                    return;
                }
            }
        }
    }
}

/// What an engine refusal says about the sender; `None` for refusals about this node.
fn offence(e: &EngineError) -> Option<Offence> {
    match e {
        EngineError::Forged(_) => Some(Offence::Forged),
        EngineError::ImpossibleRange { .. } => Some(Offence::ImpossibleRange),
        EngineError::Flood { own: true } => Some(Offence::Flood),
        EngineError::StrategyMismatch { .. } | EngineError::PayloadTooLarge { .. } => {
            Some(Offence::Refused)
        }
        // A full seen-set, or an origin over its share, refuses honest relays of someone
        // else's flood too.
        EngineError::SeenSetFull
        | EngineError::Flood { own: false }
        | EngineError::NotInPeerList
        | EngineError::WrongSigningKey => None,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::super::deliveries::DELIVERY_OVERHEAD;
    use super::*;

    fn delivery(nonce: u64, len: usize) -> Delivery {
        Delivery {
            id: MessageId {
                origin: Address([1; 20]),
                nonce,
            },
            payload: Bytes::from(vec![0u8; len]),
            origin_time_us: 0,
            hops: 1,
        }
    }

    #[test]
    fn waiting_deliveries_count_payload_and_overhead_until_the_channel_takes_them() {
        let (tx, rx) = mpsc::channel(2);
        let unread = std::sync::Arc::new(Unread::default());
        let mut rx = super::super::Deliveries::new(rx, unread.clone());
        let mut b = DeliveryBuffer::new(unread.clone());
        // Empty payloads still cost: a flood of them cannot grow the buffer unnoticed.
        for n in 0..3 {
            b.push(delivery(n, 0));
        }
        b.push(delivery(3, 1000));
        assert_eq!(b.bytes, 4 * DELIVERY_OVERHEAD + 1000);
        // The channel takes what fits its capacity; the rest stays counted here, and what the
        // channel holds counts until the application reads it.
        b.push_ready(&tx);
        assert_eq!(b.bytes, 2 * DELIVERY_OVERHEAD + 1000);
        assert_eq!(unread.bytes(), 2 * DELIVERY_OVERHEAD);
        assert_eq!(rx.try_recv().unwrap().id.nonce, 0);
        assert_eq!(unread.bytes(), DELIVERY_OVERHEAD);
        b.push_ready(&tx);
        assert_eq!(b.bytes, DELIVERY_OVERHEAD + 1000);
        assert_eq!(unread.bytes(), 2 * DELIVERY_OVERHEAD);
        drop(rx);
        b.push_ready(&tx);
        assert!(b.is_empty());
        assert_eq!(b.bytes, 0);
    }
}
