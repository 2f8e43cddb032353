//! Per-message broadcast state (SPEC 2, 4-6) as a pure state machine.
//!
//! Inputs are events ([`Engine::broadcast`], [`Engine::handle_message`],
//! [`Engine::handle_timeout`], [`Engine::set_peers`]); outputs are sends and deliveries
//! ([`Engine::poll_output`]) and the next deadline ([`Engine::poll_timeout`]).

mod auth;
mod config;
mod engine;
#[cfg(test)]
mod hostile_tests;
mod liveness;
mod seen;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use config::{Config, ParseEnumError, Redundancy};
pub use engine::Engine;

/// Signs a broadcast as its originator would; the simulator's hostile nodes use it to forge.
pub(crate) use auth::sign as sign_for_sim;

use crate::peers::Address;
use crate::wire::{Message, MessageId, Strategy};

/// What the engine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `message` (Gossip, Ack, Igyw or IgywReply) to `to`.
    Send {
        /// The receiver.
        to: Address,
        /// The message.
        message: Message,
    },
    /// Hand a payload to the application; happens exactly once per id.
    Deliver {
        /// The broadcast (or direct message) delivered.
        id: MessageId,
        /// Its payload.
        payload: Bytes,
        /// Microseconds since the Unix epoch at the originator (0 for direct messages).
        origin_time_us: u64,
        /// Hops from the originator.
        hops: u32,
    },
    /// `peer` sent something no correct peer sends; the engine coped (e.g. clamped a range),
    /// and the driver may score it against the connection (refused input is an `Err` instead).
    Misbehaved {
        /// The sender.
        peer: Address,
        /// What it did.
        reason: &'static str,
    },
}

/// Counters of everything the engine did, for metrics and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Broadcasts originated here.
    pub broadcasts: u64,
    /// Payloads handed to the application.
    pub deliveries: u64,
    /// Copies of already known messages received.
    pub duplicates: u64,
    /// Gossip messages sent (tree, resend, ring and clean-up).
    pub gossip_sent: u64,
    /// ACKs sent.
    pub acks_sent: u64,
    /// ACKs received that matched a pending send.
    pub acks_received: u64,
    /// Tree sends whose ACK did not come in time.
    pub ack_timeouts: u64,
    /// Replacement sends after a failed tree send (ACK timeout or unreachable peer).
    pub resends: u64,
    /// Failed tree sends with no node left to take their part.
    pub give_ups: u64,
    /// Redundancy-layer ring pushes sent.
    pub redundancy_sends: u64,
    /// IGYW offers sent.
    pub igyw_sent: u64,
    /// WANT replies received to our offers.
    pub igyw_want: u64,
    /// HAVE replies received to our offers.
    pub igyw_have: u64,
    /// Full messages sent after a WANT.
    pub cleanup_sends: u64,
    /// Messages refused (wrong strategy, oversized, unexpected kind).
    pub rejected: u64,
    /// Seen-set entries dropped for capacity before their age limit.
    pub evicted: u64,
    /// Transport reports of a peer that cannot be reached.
    pub unreachable: u64,
    /// Peers newly suspected after a failure (SPEC 4).
    pub suspicions: u64,
    /// Tree sends passed over because their target was suspected.
    pub skips: u64,
    /// IGYW probes sent to suspected peers.
    pub probes: u64,
    /// Failed parts of the exact tree re-split among their remaining nodes.
    pub resplits: u64,
    /// Messages offered again to a peer that failed to take them, once it was heard from.
    pub repaid: u64,
    /// Copies dropped as forged: a broadcast whose signature does not verify, a duplicate
    /// whose payload is not the one delivered, a direct message in another node's name.
    pub forged: u64,
    /// Tree copies refused because no correct sender could give them their level or range.
    pub impossible: u64,
    /// New ids refused because the seen-set and its tombstones were full of ids within
    /// their age limit.
    pub seen_full: u64,
}

impl Stats {
    /// Adds every counter of `other` to this one.
    pub fn add(&mut self, o: &Stats) {
        self.broadcasts += o.broadcasts;
        self.deliveries += o.deliveries;
        self.duplicates += o.duplicates;
        self.gossip_sent += o.gossip_sent;
        self.acks_sent += o.acks_sent;
        self.acks_received += o.acks_received;
        self.ack_timeouts += o.ack_timeouts;
        self.resends += o.resends;
        self.give_ups += o.give_ups;
        self.redundancy_sends += o.redundancy_sends;
        self.igyw_sent += o.igyw_sent;
        self.igyw_want += o.igyw_want;
        self.igyw_have += o.igyw_have;
        self.cleanup_sends += o.cleanup_sends;
        self.rejected += o.rejected;
        self.evicted += o.evicted;
        self.unreachable += o.unreachable;
        self.suspicions += o.suspicions;
        self.skips += o.skips;
        self.probes += o.probes;
        self.resplits += o.resplits;
        self.repaid += o.repaid;
        self.forged += o.forged;
        self.impossible += o.impossible;
        self.seen_full += o.seen_full;
    }
}

/// Why the engine refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// This node's address is not in the peer list given.
    #[error("this node is not in the peer list")]
    NotInPeerList,
    /// A payload over the configured limit; nothing was sent.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A gossip copy of the other tree strategy.
    #[error("gossip uses strategy {got}, this network uses {expected}")]
    StrategyMismatch {
        /// Ours.
        expected: Strategy,
        /// Theirs.
        got: Strategy,
    },
    /// A message kind the engine does not handle (request, response, goodbye).
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// A copy whose origin is not proven; the driver should penalise the connection it came on.
    #[error("forged message: {0}")]
    Forged(&'static str),
    /// A tree copy whose level or range no correct sender could send.
    #[error("level or range {got} exceeds what a correct sender could send ({max})")]
    ImpossibleRange {
        /// The level or range received.
        got: u32,
        /// The largest a correct sender could send.
        max: u32,
    },
    /// The seen-set and its tombstones are full of ids within their age limit: a new id is
    /// refused rather than a remembered one forgotten (and possibly delivered twice).
    #[error("seen-set full: new message ids refused until old ones age out")]
    SeenSetFull,
    /// A signing key whose address is not this node's.
    #[error("the signing key is not this node's identity")]
    WrongSigningKey,
}
