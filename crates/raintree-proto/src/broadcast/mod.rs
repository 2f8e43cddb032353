//! Per-message broadcast state (SPEC 2, 4-6) as a pure state machine.
//!
//! Inputs are events ([`Engine::broadcast`], [`Engine::handle_message`],
//! [`Engine::handle_timeout`], [`Engine::peer_unreachable`], [`Engine::set_peers`]);
//! outputs are sends and deliveries ([`Engine::poll_output`]) and the next deadline
//! ([`Engine::poll_timeout`]).
//!
//! One file per question:
//! - `engine`: the public API, node-wide state, and the per-message context inputs run in;
//! - `receive`: what happens to a copy from a peer, step by step;
//! - `duty`: the tree duty and delegation, failed parts, redundancy pushes;
//! - `ledger`: awaited answers (ACKs and offers), their tokens, deadlines and settling;
//! - `cleanup`: the IGYW chain, windows and probes;
//! - `budget`: the held/owed/shed byte budget;
//! - `seen`, `timers`, `liveness`: the seen-set, the timer heap, peer health;
//! - `invariants`: what must hold between inputs.

mod auth;
mod budget;
mod cleanup;
mod config;
mod duty;
mod engine;
#[cfg(test)]
mod hostile_tests;
mod invariants;
mod ledger;
mod liveness;
mod receive;
mod seen;
mod stats;
#[cfg(test)]
mod tests;
mod timers;

use bytes::Bytes;

pub use config::{Config, ParseEnumError, Redundancy};
pub use engine::Engine;
pub use invariants::InvariantViolation;
pub use stats::{Stats, StatsField};

/// Most heap bytes one remembered message costs a node once its duties are done: entry, map
/// slot with a hash table's growth slack, order record and expiry timer. Memory bounds
/// derived from `seen_capacity` use it; `tests/seen_memory.rs` measures it.
pub const SEEN_ENTRY_BYTES: usize = 768;

/// Most heap bytes an evicted id costs while it is still remembered (its tombstone).
pub const TOMBSTONE_BYTES: usize = 192;

/// What a message with duties left (pending ACKs, offers, owed peers) costs beyond
/// `SEEN_ENTRY_BYTES` and its payload: pending sends, their timers, the liveness index.
/// Counted against `Config::held_bytes` with the payload, so the budget bounds both.
pub const HELD_ENTRY_BYTES: usize = 1536;

/// Signs a broadcast as its originator would; the simulator's hostile nodes use it to forge.
pub(crate) use auth::sign as sign_for_sim;

use crate::peers::Address;
use crate::wire::{BroadcastMessage, MessageId, Strategy};

/// What the engine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `message` (Gossip, Ack, Igyw or IgywReply) to `to`.
    Send {
        /// The receiver.
        to: Address,
        /// The message.
        message: BroadcastMessage,
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
        reason: Misbehaviour,
    },
}

/// What a peer did that no correct peer does, though the engine could cope with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Misbehaviour {
    /// A tree copy with a level or range larger than a correct sender could give: cut to
    /// what it could have given.
    ImpossibleRange,
}

impl Misbehaviour {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Misbehaviour::ImpossibleRange => "impossible range",
        }
    }
}

impl std::fmt::Display for Misbehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// The origin holds its whole share of a seen-set under pressure (`Config::origin_share`):
    /// its new ids are refused until some age out.
    #[error("origin over its share of the seen-set")]
    Flood {
        /// Whether the sender is the origin itself (a flood of its own), not a relay.
        own: bool,
    },
    /// A signing key whose address is not this node's.
    #[error("the signing key is not this node's identity")]
    WrongSigningKey,
}
