//! `wire_decode`: arbitrary bytes as one protobuf `Envelope`.
//!
//! Invariants: decoding never panics; a decoded message re-encodes to bytes that decode to the
//! same message, and that encoding is a fixed point; the payload limit only ever removes
//! messages (a message accepted under a small limit is accepted, equal, under the default).

use bytes::Bytes;
use raintree_proto::wire::{self, WireError, DEFAULT_MAX_PAYLOAD};

use crate::msg::summary;

/// The small payload limit decoded against beside the default one.
pub const SMALL_LIMIT: usize = 64;

/// Runs one input.
pub fn run(data: &[u8]) {
    let big = wire::decode(Bytes::copy_from_slice(data), DEFAULT_MAX_PAYLOAD);
    let small = wire::decode(Bytes::copy_from_slice(data), SMALL_LIMIT);
    match (&big, &small) {
        (Ok(a), Ok(b)) => assert!(a == b, "the limit changed {}", summary(a)),
        (Ok(m), Err(WireError::PayloadTooLarge { len, max })) => {
            assert_eq!(*max, SMALL_LIMIT);
            assert!(*len > SMALL_LIMIT);
            assert_eq!(m.payload().map(|p| p.len()), Some(*len));
        }
        (Ok(_), Err(e)) => panic!("only the payload limit may differ, got {e:?}"),
        (Err(WireError::PayloadTooLarge { .. }), Err(WireError::PayloadTooLarge { .. })) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "errors other than the limit do not depend on it"),
        (Err(e), Ok(_)) => panic!("accepted under the small limit but not the default: {e:?}"),
    }
    let Ok(m) = big else { return };
    // Cheap accessors used on every received message must not panic either.
    let _ = (m.kind(), m.is_control(), m.payload());
    let enc = wire::encode(&m);
    let back = wire::decode(enc.clone(), DEFAULT_MAX_PAYLOAD)
        .unwrap_or_else(|e| panic!("re-encoded {} does not decode: {e}", summary(&m)));
    assert!(back == m, "round trip changed {}", summary(&m));
    assert_eq!(wire::encode(&back), enc, "encoding is not a fixed point");
}
