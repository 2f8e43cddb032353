//! Wire messages (SPEC 7): Rust types over the protobuf schema, with typed decode errors.
//!
//! Decoding never panics: every field is checked and every failure is a [`WireError`].

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::pb;
use crate::peers::{Address, ADDRESS_LEN};

/// Default limit on a broadcast or direct payload: 4 MiB, a full block.
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// Largest `Goodbye` reason accepted, so a peer cannot make us hold a huge string.
pub const MAX_REASON_LEN: usize = 256;

/// Identifies one broadcast: `(origin address, nonce)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct MessageId {
    /// The originator's address.
    pub origin: Address,
    /// A random number chosen by the originator.
    pub nonce: u64,
}

/// Which tree a network uses (SPEC 2 and 3).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The Pocket reference tree with exact integer arithmetic.
    #[default]
    Reference,
    /// The exact partition tree: every node reached exactly once.
    Exact,
}

/// How a gossip copy reached its receiver.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Route {
    /// A tree send; expects an ACK.
    #[default]
    Tree,
    /// A redundancy push towards the left ring neighbour.
    RingLeft,
    /// A redundancy push towards the right ring neighbour.
    RingRight,
    /// The full message after a WANT.
    Cleanup,
    /// A replacement send after a failed ACK; expects no ACK.
    Resend,
}

/// A broadcast payload in flight.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Gossip {
    /// The broadcast this copy belongs to.
    pub id: MessageId,
    /// Level (reference strategy) or owned range length (exact strategy).
    pub level_or_range: u32,
    /// The tree in use.
    pub strategy: Strategy,
    /// How this copy travels.
    pub route: Route,
    /// Microseconds since the Unix epoch at the originator.
    pub origin_time_us: u64,
    /// Hops from the originator (1 for the originator's own sends).
    pub hops: u32,
    /// The application payload, shared, never copied per peer.
    pub payload: Bytes,
    /// The originator's key and signature; `None` only in unsigned networks (simulator).
    pub signature: Option<Arc<OriginSignature>>,
}

/// Domain separation prefix of the bytes an originator signs (docs/WIRE.md §6.1).
pub const SIGNATURE_DOMAIN: &[u8; 22] = b"raintree-broadcast-v1:";

/// Length of the bytes an originator signs: prefix, origin, nonce, time, strategy, hash.
pub const SIGNED_LEN: usize = SIGNATURE_DOMAIN.len() + ADDRESS_LEN + 8 + 8 + 1 + 32;

/// What proves a broadcast's origin: the originator's public key and its signature.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OriginSignature {
    /// The originator's Ed25519 public key; its address is `Gossip.id.origin`.
    pub public_key: [u8; 32],
    /// Ed25519 over [`signed_bytes`].
    pub signature: [u8; 64],
}

/// SHA-256 of a payload: what the signature covers instead of the payload itself.
pub fn payload_hash(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// The exact bytes an originator signs (docs/WIRE.md §6.1). Level, range, route and hops
/// travel outside them, so forwarders can set them.
pub fn signed_bytes(
    id: &MessageId,
    origin_time_us: u64,
    strategy: Strategy,
    payload_hash: &[u8; 32],
) -> [u8; SIGNED_LEN] {
    let mut b = [0u8; SIGNED_LEN];
    let mut at = 0;
    let mut put = |x: &[u8]| {
        b[at..at + x.len()].copy_from_slice(x);
        at += x.len();
    };
    put(SIGNATURE_DOMAIN);
    put(&id.origin.0);
    put(&id.nonce.to_be_bytes());
    put(&origin_time_us.to_be_bytes());
    put(&[match strategy {
        Strategy::Reference => 0,
        Strategy::Exact => 1,
    }]);
    put(payload_hash);
    b
}

/// Declares an enum with the broadcast protocol's variants, written once, plus `$extra`: both
/// [`Message`] and [`BroadcastMessage`] have exactly these, so they cannot drift apart.
macro_rules! with_broadcast_variants {
    ($(#[$meta:meta])* pub enum $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        pub enum $name {
            /// A broadcast payload.
            Gossip(Gossip),
            /// Acknowledges a tree send.
            Ack {
                /// The broadcast acknowledged.
                id: MessageId,
                /// The level or range of the acknowledged copy.
                level_or_range: u32,
            },
            /// "I got, you want?"
            Igyw {
                /// The broadcast offered.
                id: MessageId,
                /// The clean-up window the receiver answers for (0 reads as 1).
                span: u32,
            },
            /// The answer to an `Igyw`.
            IgywReply {
                /// The broadcast offered.
                id: MessageId,
                /// True asks for the full message.
                want: bool,
            },
            /// A level-0 send: delivered, never forwarded.
            Direct {
                /// Identifies the message for dedup.
                id: MessageId,
                /// The application payload.
                payload: Bytes,
            },
            $($extra)*
        }
    };
}

with_broadcast_variants! {
    /// Every message a raintree connection carries.
    #[derive(Clone, PartialEq, Eq, Debug)]
    pub enum Message {
        /// A request expecting one `Response`.
        Request {
            /// Correlates the response, unique per connection direction.
            id: u64,
            /// The request body.
            payload: Bytes,
        },
        /// The answer to a `Request`.
        Response {
            /// The id of the request answered.
            id: u64,
            /// The response body.
            payload: Bytes,
        },
        /// Sent before a graceful close.
        Goodbye {
            /// A short human-readable reason.
            reason: String,
        },
    }
}

/// Why bytes are not a valid message, or a message may not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a protobuf `Envelope`.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// The envelope carries no message.
    #[error("envelope has no body")]
    EmptyEnvelope,
    /// A message lacks its id.
    #[error("message id missing")]
    MissingId,
    /// An origin address of the wrong length.
    #[error("origin address must be {ADDRESS_LEN} bytes, got {0}")]
    BadAddress(usize),
    /// An enum value this version does not know.
    #[error("unknown {field} value {value}")]
    UnknownEnum {
        /// The field name.
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A payload over the configured limit.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A goodbye reason longer than [`MAX_REASON_LEN`].
    #[error("goodbye reason of {0} bytes is too long")]
    ReasonTooLong(usize),
    /// `origin_key` / `signature` not 32 / 64 bytes (or both empty).
    #[error("origin key of {key} bytes and signature of {sig} bytes (want 32 and 64, or none)")]
    BadSignatureFields {
        /// Length of `origin_key`.
        key: usize,
        /// Length of `signature`.
        sig: usize,
    },
}

fn signature_from_pb(key: &[u8], sig: &[u8]) -> Result<Option<Arc<OriginSignature>>, WireError> {
    if key.is_empty() && sig.is_empty() {
        return Ok(None);
    }
    match (<[u8; 32]>::try_from(key), <[u8; 64]>::try_from(sig)) {
        (Ok(public_key), Ok(signature)) => Ok(Some(Arc::new(OriginSignature {
            public_key,
            signature,
        }))),
        _ => Err(WireError::BadSignatureFields {
            key: key.len(),
            sig: sig.len(),
        }),
    }
}

impl Message {
    /// The payload this message carries, if any.
    pub fn payload(&self) -> Option<&Bytes> {
        match self {
            Message::Gossip(g) => Some(&g.payload),
            Message::Direct { payload, .. }
            | Message::Request { payload, .. }
            | Message::Response { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// A short name of the message kind, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Gossip(_) => "gossip",
            Message::Ack { .. } => "ack",
            Message::Igyw { .. } => "igyw",
            Message::IgywReply { .. } => "igyw_reply",
            Message::Direct { .. } => "direct",
            Message::Request { .. } => "request",
            Message::Response { .. } => "response",
            Message::Goodbye { .. } => "goodbye",
        }
    }

    /// True for small control messages that travel ahead of bulk data.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            Message::Ack { .. }
                | Message::Igyw { .. }
                | Message::IgywReply { .. }
                | Message::Goodbye { .. }
        )
    }

    /// Refuses a message whose payload exceeds `max` bytes, before it reaches the wire.
    pub fn check_payload(&self, max: usize) -> Result<(), WireError> {
        match self.payload() {
            Some(p) if p.len() > max => Err(WireError::PayloadTooLarge { len: p.len(), max }),
            _ => Ok(()),
        }
    }
}

with_broadcast_variants! {
    /// The broadcast protocol's messages: what engines take and emit. The transport's own
    /// messages (`Request`, `Response`, `Goodbye`) have no variant here, so they cannot reach an
    /// engine.
    #[derive(Clone, PartialEq, Eq, Debug)]
    pub enum BroadcastMessage {}
}

impl BroadcastMessage {
    /// The broadcast this message is about.
    pub fn id(&self) -> MessageId {
        match self {
            BroadcastMessage::Gossip(g) => g.id,
            BroadcastMessage::Ack { id, .. }
            | BroadcastMessage::Igyw { id, .. }
            | BroadcastMessage::IgywReply { id, .. }
            | BroadcastMessage::Direct { id, .. } => *id,
        }
    }

    /// A short name of the message kind, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            BroadcastMessage::Gossip(_) => "gossip",
            BroadcastMessage::Ack { .. } => "ack",
            BroadcastMessage::Igyw { .. } => "igyw",
            BroadcastMessage::IgywReply { .. } => "igyw_reply",
            BroadcastMessage::Direct { .. } => "direct",
        }
    }
}

impl From<BroadcastMessage> for Message {
    fn from(m: BroadcastMessage) -> Self {
        match m {
            BroadcastMessage::Gossip(g) => Message::Gossip(g),
            BroadcastMessage::Ack { id, level_or_range } => Message::Ack { id, level_or_range },
            BroadcastMessage::Igyw { id, span } => Message::Igyw { id, span },
            BroadcastMessage::IgywReply { id, want } => Message::IgywReply { id, want },
            BroadcastMessage::Direct { id, payload } => Message::Direct { id, payload },
        }
    }
}

impl TryFrom<Message> for BroadcastMessage {
    /// A transport message, given back whole.
    type Error = Message;

    fn try_from(m: Message) -> Result<Self, Message> {
        Ok(match m {
            Message::Gossip(g) => BroadcastMessage::Gossip(g),
            Message::Ack { id, level_or_range } => BroadcastMessage::Ack { id, level_or_range },
            Message::Igyw { id, span } => BroadcastMessage::Igyw { id, span },
            Message::IgywReply { id, want } => BroadcastMessage::IgywReply { id, want },
            Message::Direct { id, payload } => BroadcastMessage::Direct { id, payload },
            other => return Err(other),
        })
    }
}

fn id_to_pb(id: &MessageId) -> Option<pb::MessageId> {
    Some(pb::MessageId {
        origin: Bytes::copy_from_slice(&id.origin.0),
        nonce: id.nonce,
    })
}

fn id_from_pb(id: Option<pb::MessageId>) -> Result<MessageId, WireError> {
    let id = id.ok_or(WireError::MissingId)?;
    let origin: [u8; ADDRESS_LEN] = id
        .origin
        .as_ref()
        .try_into()
        .map_err(|_| WireError::BadAddress(id.origin.len()))?;
    Ok(MessageId {
        origin: Address(origin),
        nonce: id.nonce,
    })
}

impl From<&Message> for pb::Envelope {
    fn from(m: &Message) -> Self {
        Self::from(m.clone())
    }
}

/// Moves the payload into the envelope: the sending path encodes without touching its
/// reference count, which the application may be touching on another core.
impl From<Message> for pb::Envelope {
    fn from(m: Message) -> Self {
        use pb::envelope::Body;
        let body = match m {
            Message::Gossip(g) => Body::Gossip(pb::Gossip {
                id: id_to_pb(&g.id),
                level_or_range: g.level_or_range,
                strategy: match g.strategy {
                    Strategy::Reference => pb::Strategy::Reference,
                    Strategy::Exact => pb::Strategy::Exact,
                } as i32,
                route: match g.route {
                    Route::Tree => pb::Route::Tree,
                    Route::RingLeft => pb::Route::RingLeft,
                    Route::RingRight => pb::Route::RingRight,
                    Route::Cleanup => pb::Route::Cleanup,
                    Route::Resend => pb::Route::Resend,
                } as i32,
                origin_time_us: g.origin_time_us,
                hops: g.hops,
                payload: g.payload,
                origin_key: g
                    .signature
                    .as_ref()
                    .map(|s| Bytes::copy_from_slice(&s.public_key))
                    .unwrap_or_default(),
                signature: g
                    .signature
                    .as_ref()
                    .map(|s| Bytes::copy_from_slice(&s.signature))
                    .unwrap_or_default(),
            }),
            Message::Ack { id, level_or_range } => Body::Ack(pb::Ack {
                id: id_to_pb(&id),
                level_or_range,
            }),
            Message::Igyw { id, span } => Body::Igyw(pb::Igyw {
                id: id_to_pb(&id),
                span,
            }),
            Message::IgywReply { id, want } => Body::IgywReply(pb::IgywReply {
                id: id_to_pb(&id),
                want,
            }),
            Message::Direct { id, payload } => Body::Direct(pb::Direct {
                id: id_to_pb(&id),
                payload,
            }),
            Message::Request { id, payload } => Body::Request(pb::Request { id, payload }),
            Message::Response { id, payload } => Body::Response(pb::Response { id, payload }),
            Message::Goodbye { reason } => Body::Goodbye(pb::Goodbye { reason }),
        };
        pb::Envelope { body: Some(body) }
    }
}

impl TryFrom<pb::Envelope> for Message {
    type Error = WireError;

    fn try_from(e: pb::Envelope) -> Result<Self, WireError> {
        use pb::envelope::Body;
        Ok(match e.body.ok_or(WireError::EmptyEnvelope)? {
            Body::Gossip(g) => Message::Gossip(Gossip {
                id: id_from_pb(g.id)?,
                level_or_range: g.level_or_range,
                strategy: match pb::Strategy::try_from(g.strategy) {
                    Ok(pb::Strategy::Reference) => Strategy::Reference,
                    Ok(pb::Strategy::Exact) => Strategy::Exact,
                    Err(_) => {
                        return Err(WireError::UnknownEnum {
                            field: "strategy",
                            value: g.strategy,
                        })
                    }
                },
                route: match pb::Route::try_from(g.route) {
                    Ok(pb::Route::Tree) => Route::Tree,
                    Ok(pb::Route::RingLeft) => Route::RingLeft,
                    Ok(pb::Route::RingRight) => Route::RingRight,
                    Ok(pb::Route::Cleanup) => Route::Cleanup,
                    Ok(pb::Route::Resend) => Route::Resend,
                    Err(_) => {
                        return Err(WireError::UnknownEnum {
                            field: "route",
                            value: g.route,
                        })
                    }
                },
                origin_time_us: g.origin_time_us,
                hops: g.hops,
                signature: signature_from_pb(&g.origin_key, &g.signature)?,
                payload: g.payload,
            }),
            Body::Ack(a) => Message::Ack {
                id: id_from_pb(a.id)?,
                level_or_range: a.level_or_range,
            },
            Body::Igyw(i) => Message::Igyw {
                id: id_from_pb(i.id)?,
                span: i.span,
            },
            Body::IgywReply(r) => Message::IgywReply {
                id: id_from_pb(r.id)?,
                want: r.want,
            },
            Body::Direct(d) => Message::Direct {
                id: id_from_pb(d.id)?,
                payload: d.payload,
            },
            Body::Request(r) => Message::Request {
                id: r.id,
                payload: r.payload,
            },
            Body::Response(r) => Message::Response {
                id: r.id,
                payload: r.payload,
            },
            Body::Goodbye(g) => {
                if g.reason.len() > MAX_REASON_LEN {
                    return Err(WireError::ReasonTooLong(g.reason.len()));
                }
                Message::Goodbye { reason: g.reason }
            }
        })
    }
}

/// Encodes a message as one protobuf `Envelope`.
pub fn encode(m: &Message) -> Bytes {
    let env = pb::Envelope::from(m);
    let mut buf = BytesMut::with_capacity(env.encoded_len());
    // Encoding into a buffer sized by `encoded_len` cannot fail.
    env.encode(&mut buf).expect("buffer sized by encoded_len");
    buf.freeze()
}

/// Decodes one `Envelope`, refusing payloads over `max_payload` bytes.
///
/// Payload fields are slices of `bytes`, so decoding does not copy them.
pub fn decode(bytes: Bytes, max_payload: usize) -> Result<Message, WireError> {
    let env = pb::Envelope::decode(bytes).map_err(|e| WireError::Protobuf(e.to_string()))?;
    let m = Message::try_from(env)?;
    m.check_payload(max_payload)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::{any, proptest};

    fn id() -> MessageId {
        MessageId {
            origin: Address::from_index(1),
            nonce: 0x0102_0304_0506_0708,
        }
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Gossip(Gossip {
                id: id(),
                level_or_range: 3,
                strategy: Strategy::Exact,
                route: Route::RingLeft,
                origin_time_us: 1_700_000_000_000_000,
                hops: 2,
                payload: Bytes::from_static(b"block"),
                signature: Some(Arc::new(OriginSignature {
                    public_key: [7; 32],
                    signature: [9; 64],
                })),
            }),
            Message::Ack {
                id: id(),
                level_or_range: 2,
            },
            Message::Igyw { id: id(), span: 0 },
            Message::IgywReply {
                id: id(),
                want: true,
            },
            Message::Direct {
                id: id(),
                payload: Bytes::from_static(b"x"),
            },
            Message::Request {
                id: 9,
                payload: Bytes::from_static(b"ping"),
            },
            Message::Response {
                id: 9,
                payload: Bytes::new(),
            },
            Message::Goodbye {
                reason: "shutdown".into(),
            },
        ]
    }

    #[test]
    fn only_broadcast_messages_reach_an_engine() {
        for m in samples() {
            match BroadcastMessage::try_from(m.clone()) {
                Ok(b) => {
                    assert_eq!(b.kind(), m.kind());
                    assert_eq!(Message::from(b), m, "the conversion loses nothing");
                }
                Err(back) => {
                    assert!(matches!(
                        back,
                        Message::Request { .. }
                            | Message::Response { .. }
                            | Message::Goodbye { .. }
                    ));
                    assert_eq!(back, m);
                }
            }
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for m in samples() {
            let back = decode(encode(&m), DEFAULT_MAX_PAYLOAD).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn typed_errors() {
        assert_eq!(
            decode(Bytes::new(), DEFAULT_MAX_PAYLOAD),
            Err(WireError::EmptyEnvelope)
        );
        let big = Message::Direct {
            id: id(),
            payload: Bytes::from(vec![0u8; 11]),
        };
        assert_eq!(
            decode(encode(&big), 10),
            Err(WireError::PayloadTooLarge { len: 11, max: 10 })
        );
        // An Ack whose id has a 3-byte origin.
        let bad = pb::Envelope {
            body: Some(pb::envelope::Body::Ack(pb::Ack {
                id: Some(pb::MessageId {
                    origin: Bytes::from_static(b"abc"),
                    nonce: 1,
                }),
                level_or_range: 1,
            })),
        };
        assert_eq!(
            decode(bad.encode_to_vec().into(), 10),
            Err(WireError::BadAddress(3))
        );
        assert!(matches!(
            decode(Bytes::from_static(&[0xff, 0xff]), 10),
            Err(WireError::Protobuf(_))
        ));
        // A gossip whose key is 31 bytes: undecodable, not a forgery to verify.
        let short_key = pb::Envelope {
            body: Some(pb::envelope::Body::Gossip(pb::Gossip {
                id: id_to_pb(&id()),
                origin_key: Bytes::from(vec![1u8; 31]),
                signature: Bytes::from(vec![2u8; 64]),
                ..Default::default()
            })),
        };
        assert_eq!(
            decode(short_key.encode_to_vec().into(), 10),
            Err(WireError::BadSignatureFields { key: 31, sig: 64 })
        );
    }

    /// One `Message` per oneof case; the exhaustive match fails to compile if the schema gains
    /// a case the Rust types do not map.
    fn sample_for(body: &pb::envelope::Body) -> Message {
        use pb::envelope::Body;
        let s = samples();
        match body {
            Body::Gossip(_) => s[0].clone(),
            Body::Ack(_) => s[1].clone(),
            Body::Igyw(_) => s[2].clone(),
            Body::IgywReply(_) => s[3].clone(),
            Body::Direct(_) => s[4].clone(),
            Body::Request(_) => s[5].clone(),
            Body::Response(_) => s[6].clone(),
            Body::Goodbye(_) => s[7].clone(),
        }
    }

    #[test]
    fn schema_and_rust_types_agree() {
        let mut cases = std::collections::HashSet::new();
        for m in samples() {
            let env = pb::Envelope::from(&m);
            let body = env.body.clone().expect("every message has a body");
            // The variant maps to the oneof case of the same name, and back to itself.
            assert_eq!(sample_for(&body), m);
            assert_eq!(Message::try_from(env).unwrap(), m);
            assert!(cases.insert(std::mem::discriminant(&body)));
        }
        assert_eq!(cases.len(), 8, "every oneof case is covered");
        // Every enum value the schema defines converts, and nothing else does.
        for v in -1..8 {
            let g = pb::Gossip {
                id: id_to_pb(&id()),
                strategy: v,
                route: v,
                ..Default::default()
            };
            let env = pb::Envelope {
                body: Some(pb::envelope::Body::Gossip(g)),
            };
            let ok = Message::try_from(env).is_ok();
            let known = pb::Strategy::try_from(v).is_ok() && pb::Route::try_from(v).is_ok();
            assert_eq!(ok, known, "value {v}");
        }
        for r in [
            Route::Tree,
            Route::RingLeft,
            Route::RingRight,
            Route::Cleanup,
            Route::Resend,
        ] {
            for st in [Strategy::Reference, Strategy::Exact] {
                let m = Message::Gossip(Gossip {
                    id: id(),
                    route: r,
                    strategy: st,
                    ..Gossip::default()
                });
                assert_eq!(decode(encode(&m), 0).unwrap(), m);
            }
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(Bytes::from(data), 64);
        }

        #[test]
        fn mutated_valid_messages_never_panic(idx in 0usize..8, flip in any::<(usize, u8)>()) {
            let mut raw = encode(&samples()[idx]).to_vec();
            let at = flip.0 % raw.len();
            raw[at] ^= flip.1;
            let _ = decode(Bytes::from(raw), 64);
        }
    }
}
