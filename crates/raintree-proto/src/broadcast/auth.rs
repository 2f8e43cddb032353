//! Signed broadcasts (SPEC 7, docs/WIRE.md §6.1): signing this node's own, verifying others'.

use std::sync::Arc;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::peers::Address;
use crate::wire::{signed_bytes, Gossip, MessageId, OriginSignature, Strategy};

/// Signs what this node originates.
pub(crate) fn sign(
    key: &SigningKey,
    id: &MessageId,
    origin_time_us: u64,
    strategy: Strategy,
    payload_hash: &[u8; 32],
) -> Arc<OriginSignature> {
    let msg = signed_bytes(id, origin_time_us, strategy, payload_hash);
    Arc::new(OriginSignature {
        public_key: key.verifying_key().to_bytes(),
        signature: key.sign(&msg).to_bytes(),
    })
}

/// Why a copy's origin is not proven.
pub(crate) fn check(g: &Gossip, payload_hash: &[u8; 32]) -> Result<(), &'static str> {
    let s = g.signature.as_ref().ok_or("unsigned")?;
    if Address::from_public_key(&s.public_key) != g.id.origin {
        return Err("key is not the origin's");
    }
    let key = VerifyingKey::from_bytes(&s.public_key).map_err(|_| "bad public key")?;
    let sig = ed25519_dalek::Signature::from_bytes(&s.signature);
    let msg = signed_bytes(&g.id, g.origin_time_us, g.strategy, payload_hash);
    // Strict: no small-order keys or R, canonical S; the bytes cannot be re-signed by anyone.
    key.verify_strict(&msg, &sig)
        .map_err(|_| "signature does not verify")
}
