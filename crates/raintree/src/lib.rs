//! RainTree over TCP: an authenticated, encrypted, pooled transport and the node that drives
//! the `raintree-proto` state machine with it.

#![warn(missing_docs)]

pub mod metrics;
pub mod net;
pub mod node;
pub mod transport;
#[cfg(feature = "turmoil")]
pub mod wan;

pub use raintree_proto as proto;

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
