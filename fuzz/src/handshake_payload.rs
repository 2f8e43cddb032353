//! `handshake_payload`: arbitrary bytes as the identity payload of a Noise handshake message,
//! checked against a Noise static key.
//!
//! Input: a mode byte, then
//! - mode 0: the payload, checked against the WIRE.md initiator static key;
//! - mode 1: a 32-byte static key, then the payload;
//! - mode 2: a length byte, a static key of that length, then the payload;
//! - mode 3: an identity selector, a 32-byte static key, a bit index, then (position u16,
//!   xor byte) pairs: a valid payload is signed for that static key and then mutated.
//!
//! Invariants: verification never panics; whatever verifies carries a key and a signature that
//! Ed25519 strict verification accepts over `PREFIX || static key` (WIRE.md 3.1), and no longer
//! verifies once one bit of the static key changes; a valid payload verifies for its own static
//! key and proves its signer's key; a mutated payload that still verifies proves the same key
//! with the same signature (Ed25519 strict verification is not malleable).

use std::sync::OnceLock;

use arbitrary::Unstructured;
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use raintree::transport::handshake::{signed_payload, verify_payload, SIGNATURE_PREFIX};
use raintree::transport::Identity;
use raintree_proto::pb;

use crate::input::{byte, raw, take, u16le};

/// The WIRE.md 7.2 initiator's Noise static public key.
pub const VECTOR_STATIC: [u8; 32] = [
    0x64, 0xb1, 0x01, 0xb1, 0xd0, 0xbe, 0x5a, 0x87, 0x04, 0xbd, 0x07, 0x8f, 0x98, 0x95, 0x00, 0x1f,
    0xc0, 0x3e, 0x8e, 0x9f, 0x95, 0x22, 0xf1, 0x88, 0xdd, 0x12, 0x8d, 0x98, 0x46, 0xd4, 0x84, 0x66,
];

/// Identity seeds of WIRE.md 7.1: the initiator's and the responder's.
pub fn identities() -> &'static [Identity; 2] {
    static IDS: OnceLock<[Identity; 2]> = OnceLock::new();
    IDS.get_or_init(|| {
        let seed = |first: u8| {
            let mut s = [0u8; 32];
            for (i, b) in s.iter_mut().enumerate() {
                *b = first + i as u8;
            }
            Identity::from_secret_bytes(&s)
        };
        [seed(0x01), seed(0x21)]
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    match byte(&mut u) % 4 {
        0 => check_any(u.take_rest(), &VECTOR_STATIC),
        1 => {
            let s: [u8; 32] = take(&mut u);
            check_any(u.take_rest(), &s);
        }
        2 => {
            let n = usize::from(byte(&mut u));
            let s = raw(&mut u, n).to_vec();
            check_any(u.take_rest(), &s);
        }
        _ => check_mutated(&mut u),
    }
}

/// Checks what any payload may do against `remote_static`.
fn check_any(payload: &[u8], remote_static: &[u8]) {
    let Ok(key) = verify_payload(payload, remote_static) else {
        return;
    };
    let p = pb::HandshakePayload::decode(payload).expect("a verified payload decodes");
    assert_eq!(
        p.identity_key.as_ref(),
        key,
        "proved a key the payload does not carry"
    );
    let sig: [u8; 64] = p.signature.as_ref().try_into().expect("64-byte signature");
    let vk = VerifyingKey::from_bytes(&key).expect("a verified key is a point");
    let mut msg = SIGNATURE_PREFIX.to_vec();
    msg.extend_from_slice(remote_static);
    vk.verify_strict(&msg, &Signature::from_bytes(&sig))
        .expect("WIRE.md's signed message verifies");
    let other = flip(remote_static, 0);
    assert!(
        verify_payload(payload, &other).is_err(),
        "a payload verified for two static keys"
    );
}

/// A copy of `s` with bit `bit` (modulo its length) flipped; one byte longer when empty.
fn flip(s: &[u8], bit: usize) -> Vec<u8> {
    let mut o = s.to_vec();
    if o.is_empty() {
        o.push(0);
    } else {
        let i = bit % (o.len() * 8);
        o[i / 8] ^= 1 << (i % 8);
    }
    o
}

fn check_mutated(u: &mut Unstructured<'_>) {
    let id = &identities()[usize::from(byte(u) & 1)];
    let s: [u8; 32] = take(u);
    let bit = usize::from(byte(u));
    let good = signed_payload(id, &s);
    assert_eq!(
        verify_payload(&good, &s).expect("a signed payload verifies"),
        id.public_key()
    );
    assert!(
        verify_payload(&good, &flip(&s, bit)).is_err(),
        "verified for a static key it does not sign"
    );
    assert!(
        verify_payload(&good, &s[..31]).is_err(),
        "verified for a truncated key"
    );
    let mut bad = good.clone();
    while !u.is_empty() {
        let at = usize::from(u16le(u));
        let x = byte(u);
        // Positions past the end append, so a mutation can also add trailing fields.
        if at < bad.len() {
            bad[at] ^= x;
        } else {
            bad.push(x);
        }
    }
    check_any(&bad, &s);
    if let Ok(k) = verify_payload(&bad, &s) {
        assert_eq!(k, id.public_key(), "a mutation proved another identity");
        let p = pb::HandshakePayload::decode(&bad[..]).expect("decodes");
        let g = pb::HandshakePayload::decode(&good[..]).expect("decodes");
        assert_eq!(p.signature, g.signature, "a mutated signature verified");
    }
}
