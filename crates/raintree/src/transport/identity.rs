//! A node's long-term Ed25519 identity and the address derived from it.

use ed25519_dalek::{Signer, SigningKey};
use raintree_proto::Address;

/// A node's Ed25519 key pair; its address is the first 20 bytes of SHA-256(public key).
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A fresh random identity from the operating system's RNG.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The identity whose 32-byte Ed25519 secret (seed) is `b`.
    pub fn from_secret_bytes(b: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(b),
        }
    }

    /// The 32-byte Ed25519 secret (seed); keep it private.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The address: first 20 bytes of SHA-256(public key).
    pub fn address(&self) -> Address {
        Address::from_public_key(&self.public_key())
    }

    /// Signs `msg` (deterministic Ed25519, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

impl std::fmt::Debug for Identity {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("address", &self.address())
            .finish()
    }
}
