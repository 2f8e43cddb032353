//! The most memory a node's configuration lets it use, whatever its peers send.

use raintree_proto::broadcast::{HELD_ENTRY_BYTES, SEEN_ENTRY_BYTES, TOMBSTONE_BYTES};

use super::NodeConfig;
use crate::transport::framing::max_frame_len;

/// The binary, the runtime, thread stacks, the allocator's slack and the engine's fixed
/// parts, measured at about 6 MiB on an idle node and allowed five times that.
pub const FIXED_BYTES: u64 = 32 << 20;

/// Pieces of [`NodeConfig::memory_bound`], each a bound on what it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBound {
    /// [`FIXED_BYTES`].
    pub fixed: u64,
    /// Every remembered id: `seen_capacity` entries and as many tombstones.
    pub seen: u64,
    /// Messages kept for duties (`held_bytes`), plus the one that crosses it.
    pub held: u64,
    /// Send queues of all peers (`total_queue_bytes`).
    pub queues: u64,
    /// Transport events waiting for the driver (`event_bytes`, one larger event, the slots).
    pub events: u64,
    /// Deliveries the application has not read (`delivery_buffer_bytes`, plus one).
    pub deliveries: u64,
    /// Per connection: a frame being reassembled, a write batch and its sealed copy.
    pub connections: u64,
}

impl MemoryBound {
    /// The sum: the most resident memory the node needs.
    pub fn total(&self) -> u64 {
        self.fixed
            + self.seen
            + self.held
            + self.queues
            + self.events
            + self.deliveries
            + self.connections
    }
}

impl NodeConfig {
    /// A bound on this node's memory with `connections` open connections, from its limits
    /// alone: every buffer that peers can fill is bounded in bytes by one of them.
    pub fn memory_bound(&self, connections: usize) -> MemoryBound {
        let t = &self.transport;
        let p = &self.protocol;
        let max = t.max_payload as u64;
        MemoryBound {
            fixed: FIXED_BYTES,
            seen: p.seen_capacity as u64 * (SEEN_ENTRY_BYTES + TOMBSTONE_BYTES) as u64,
            held: p.held_bytes as u64 + max + HELD_ENTRY_BYTES as u64,
            queues: t.total_queue_bytes as u64,
            events: t.event_bytes as u64 + max + 256 * t.event_capacity as u64,
            deliveries: self.delivery_buffer_bytes as u64 + max,
            connections: connections as u64
                * (max_frame_len(t.max_payload) + 2 * t.batch_bytes) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Identity;

    #[test]
    fn the_defaults_bound_a_node_with_ten_connections_to_256_mib() {
        let cfg = NodeConfig::new(
            Identity::from_secret_bytes(&[1; 32]),
            "127.0.0.1:0".parse().unwrap(),
            Vec::new(),
        );
        let b = cfg.memory_bound(10);
        assert!(b.total() <= 256 << 20, "{} MiB: {b:?}", b.total() >> 20);
        // Each budget moves the bound by exactly what it allows.
        let mut more = cfg;
        more.protocol.held_bytes += 1 << 20;
        more.delivery_buffer_bytes += 1 << 20;
        assert_eq!(more.memory_bound(10).total(), b.total() + (2 << 20));
    }
}
