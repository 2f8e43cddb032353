//! The peer book: where each known peer listens.
//!
//! Its owner (the node, or whoever drives a bare transport) keeps it; the transport holds a
//! handle to the same book and reads it when it dials a peer or admits one, so the addresses
//! are kept once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raintree_proto::Address;

/// Known peers and where they listen. Cheap to clone: every clone is the same book.
#[derive(Clone, Debug, Default)]
pub struct PeerBook(Arc<RwLock<HashMap<Address, SocketAddr>>>);

impl PeerBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<Address, SocketAddr>> {
        // The map is consistent after every call, so a panic elsewhere must not wedge it.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Address, SocketAddr>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Where `peer` listens, if it is known.
    pub fn get(&self, peer: &Address) -> Option<SocketAddr> {
        self.read().get(peer).copied()
    }

    /// True if `peer` is known.
    pub fn contains(&self, peer: &Address) -> bool {
        self.read().contains_key(peer)
    }

    /// Adds `peer` (or moves it to `addr`); returns where it listened before.
    pub fn insert(&self, peer: Address, addr: SocketAddr) -> Option<SocketAddr> {
        self.write().insert(peer, addr)
    }

    /// Forgets `peer`; returns where it listened. A transport keeps serving its connections
    /// until told with [`Transport::peers_removed`](super::Transport::peers_removed).
    pub fn remove(&self, peer: &Address) -> Option<SocketAddr> {
        self.write().remove(peer)
    }

    /// Replaces every entry; returns the previous ones.
    pub fn replace(&self, peers: HashMap<Address, SocketAddr>) -> HashMap<Address, SocketAddr> {
        std::mem::replace(&mut *self.write(), peers)
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> HashMap<Address, SocketAddr> {
        self.read().clone()
    }

    /// How many peers are known.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no peer is known.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

impl From<HashMap<Address, SocketAddr>> for PeerBook {
    fn from(peers: HashMap<Address, SocketAddr>) -> Self {
        Self(Arc::new(RwLock::new(peers)))
    }
}

impl<const N: usize> From<[(Address, SocketAddr); N]> for PeerBook {
    fn from(peers: [(Address, SocketAddr); N]) -> Self {
        peers.into_iter().collect()
    }
}

impl FromIterator<(Address, SocketAddr)> for PeerBook {
    fn from_iter<I: IntoIterator<Item = (Address, SocketAddr)>>(peers: I) -> Self {
        HashMap::from_iter(peers).into()
    }
}
