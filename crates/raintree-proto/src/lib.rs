//! RainTree gossip as a pure state machine: no sockets, no async, no clock.
//!
//! Time enters only as an argument (`now`), randomness only through a seeded RNG, so the same
//! core runs in a real node, in the deterministic simulator and in unit tests.

#![warn(missing_docs)]

pub mod broadcast;
pub mod drive;
pub mod peers;
pub mod sim;
pub mod tree;
pub mod wire;

/// The generated protobuf types of `proto/raintree.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/raintree.v1.rs"));
}

pub use peers::{Address, PeerList};
pub use wire::{BroadcastMessage, Message, MessageId};
