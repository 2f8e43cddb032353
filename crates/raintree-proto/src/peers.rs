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
    fn address_is_sha256_prefix() {
        // SHA-256 of 32 zero bytes starts 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925.
        let a = Address::from_public_key(&[0u8; 32]);
        assert_eq!(a.to_hex(), "66687aadf862bd776c8fc18b8e9f8e2008971485");
    }
}
