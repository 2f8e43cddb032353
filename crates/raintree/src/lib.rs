//! RainTree over TCP: an authenticated, encrypted, pooled transport and the node that drives
//! the `raintree-proto` state machine with it.

pub mod metrics;
pub mod node;
pub mod transport;

pub use raintree_proto as proto;
