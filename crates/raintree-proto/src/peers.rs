//! Identities and addresses (SPEC 1).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Length in bytes of a peer address.
pub const ADDRESS_LEN: usize = 20;

/// A peer's address: the first 20 bytes of SHA-256 of its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub [u8; ADDRESS_LEN]);

impl Address {
    /// The address of an Ed25519 public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public_key);
        let mut out = [0u8; ADDRESS_LEN];
        out.copy_from_slice(&digest[..ADDRESS_LEN]);
        Address(out)
    }

    /// The address as 40 lower-case hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A deterministic address for tests and simulations, derived from a number.
    pub fn from_index(i: u64) -> Self {
        Self::from_public_key(&{
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.to_le_bytes());
            k
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex characters are enough to tell peers apart in logs.
        write!(f, "Address({})", &self.to_hex()[..8])
    }
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AddressParseError {
    /// Not exactly 40 characters.
    #[error("an address is 40 hex characters, got {0}")]
    Length(usize),
    /// A character outside `0-9a-f`.
    #[error("an address is lower-case hex: {0}")]
    Hex(#[from] hex::FromHexError),
}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 2 * ADDRESS_LEN {
            return Err(AddressParseError::Length(s.len()));
        }
        let mut out = [0u8; ADDRESS_LEN];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Address(out))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The sorted, deduplicated peer list of SPEC 1 (self included), shared between nodes by `Arc`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerList {
    sorted: Vec<Address>,
}

impl PeerList {
    /// Sorts and deduplicates `peers`.
    pub fn new(peers: impl IntoIterator<Item = Address>) -> Self {
        let mut sorted: Vec<Address> = peers.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        PeerList { sorted }
    }

    /// Number of peers, `N`.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when no peer is known.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The sorted position of `a`, found by binary search.
    pub fn position(&self, a: &Address) -> Option<usize> {
        self.sorted.binary_search(a).ok()
    }

    /// The address at sorted position `pos`.
    pub fn get(&self, pos: usize) -> Option<Address> {
        self.sorted.get(pos).copied()
    }

    /// The sorted addresses.
    pub fn as_slice(&self) -> &[Address] {
        &self.sorted
    }

    /// The address at `offset` in the view of the node at sorted position `me` (SPEC 1).
    pub fn at_offset(&self, me: usize, offset: usize) -> Option<Address> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        self.get((me % n + offset % n) % n)
    }

    /// The view offset of `a` as seen from sorted position `me`, if `a` is in the list.
    pub fn offset_of(&self, me: usize, a: &Address) -> Option<usize> {
        let n = self.sorted.len();
        let p = self.position(a)?;
        Some((p + n - me % n) % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let a = Address::from_index(7);
        assert_eq!(a.to_hex().parse::<Address>().unwrap(), a);
        assert_eq!("abc".parse::<Address>(), Err(AddressParseError::Length(3)));
        assert!("zz".repeat(20).parse::<Address>().is_err());
    }

    #[test]
    fn peer_list_sorts_dedups_and_rotates() {
        let a: Vec<Address> = (0..5).map(Address::from_index).collect();
        let list = PeerList::new(a.iter().rev().copied().chain(a.iter().copied()));
        assert_eq!(list.len(), 5);
        assert!(list.as_slice().windows(2).all(|w| w[0] < w[1]));
        for (i, x) in list.as_slice().iter().enumerate() {
            assert_eq!(list.position(x), Some(i));
            assert_eq!(list.at_offset(i, 0), Some(*x));
            assert_eq!(list.at_offset(i, 1), list.get((i + 1) % 5));
            assert_eq!(list.offset_of(3, x), Some((i + 5 - 3) % 5));
        }
        assert_eq!(list.position(&Address::from_index(99)), None);
        assert_eq!(PeerList::new([]).at_offset(0, 0), None);
    }

    #[test]
    fn address_is_sha256_prefix() {
        // SHA-256 of 32 zero bytes starts 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925.
        let a = Address::from_public_key(&[0u8; 32]);
        assert_eq!(a.to_hex(), "66687aadf862bd776c8fc18b8e9f8e2008971485");
    }
}
