//! Structured messages built from fuzz input: ids drawn from a small pool so that ACKs,
//! replies and duplicates meet the state they belong to, payloads as runs of one byte so that
//! large frames cost only a few input bytes.
//!
//! Every place the `engine` target builds or looks inside a message is here ([`message`],
//! [`carried_id`], [`delivery`], [`check_sent`], [`shape`]), so a change of the engine's
//! message type is an edit of this module.

use arbitrary::Unstructured;
use bytes::Bytes;
use raintree_proto::wire::{self, Gossip, Message, MessageId, Route, Strategy};
use raintree_proto::Address;

use crate::input::{byte, u16le, Writer};

/// What a message's ids and payloads are drawn from.
pub struct Ctx<'a> {
    /// Origins for fresh ids (a fixed address when empty).
    pub origins: &'a [Address],
    /// Ids seen so far, so a message can name one of them.
    pub ids: &'a [MessageId],
    /// Payload length = input u16 x `unit`, modulo `max_len + 1`.
    pub unit: usize,
    /// Largest payload built.
    pub max_len: usize,
}

/// Reads one message.
pub fn message(u: &mut Unstructured<'_>, ctx: &Ctx<'_>) -> Message {
    match byte(u) % 8 {
        0 => {
            let id = id(u, ctx);
            let level_or_range = lor(u);
            let flags = byte(u);
            Message::Gossip(Gossip {
                id,
                level_or_range,
                strategy: if flags & 1 == 0 {
                    Strategy::Reference
                } else {
                    Strategy::Exact
                },
                route: ROUTES[usize::from(flags >> 1) % ROUTES.len()],
                hops: u32::from(byte(u)),
                origin_time_us: u64::from(u16le(u)),
                payload: payload(u, ctx),
                // Fields the wire may gain later (signatures) keep their defaults here.
                ..Gossip::default()
            })
        }
        1 => Message::Ack {
            id: id(u, ctx),
            level_or_range: lor(u),
        },
        2 => Message::Igyw {
            id: id(u, ctx),
            span: u32::from(byte(u) % 40),
        },
        3 => Message::IgywReply {
            id: id(u, ctx),
            want: byte(u) & 1 == 1,
        },
        4 => Message::Direct {
            id: id(u, ctx),
            payload: payload(u, ctx),
        },
        5 => Message::Request {
            id: u64::from(byte(u)),
            payload: payload(u, ctx),
        },
        6 => Message::Response {
            id: u64::from(byte(u)),
            payload: payload(u, ctx),
        },
        _ => {
            // Up to 510 bytes, so reasons over the 256-byte limit occur too.
            let len = usize::from(byte(u)) * 2;
            let c = b'a' + byte(u) % 26;
            Message::Goodbye {
                reason: String::from_utf8(vec![c; len]).unwrap_or_default(),
            }
        }
    }
}

const ROUTES: [Route; 5] = [
    Route::Tree,
    Route::RingLeft,
    Route::RingRight,
    Route::Cleanup,
    Route::Resend,
];

fn id(u: &mut Unstructured<'_>, ctx: &Ctx<'_>) -> MessageId {
    let sel = byte(u);
    if sel & 0x80 != 0 && !ctx.ids.is_empty() {
        return ctx.ids[usize::from(sel & 0x7f) % ctx.ids.len()];
    }
    let origin = if ctx.origins.is_empty() {
        Address::from_index(0)
    } else {
        ctx.origins[usize::from(sel & 0x7f) % ctx.origins.len()]
    };
    MessageId {
        origin,
        nonce: u64::from(byte(u)),
    }
}

fn lor(u: &mut Unstructured<'_>) -> u32 {
    match byte(u) {
        255 => u32::MAX,
        b => u32::from(b),
    }
}

fn payload(u: &mut Unstructured<'_>, ctx: &Ctx<'_>) -> Bytes {
    let len = (usize::from(u16le(u)) * ctx.unit) % (ctx.max_len + 1);
    let fill = byte(u);
    Bytes::from(vec![fill; len])
}

/// How a seed names a message id.
#[derive(Clone, Copy, Debug)]
pub enum IdSpec {
    /// The `i`-th id of the pool.
    Known(u8),
    /// A fresh id: origin index and nonce.
    New(u8, u8),
}

/// A message as a seed writes it (mirrors [`message`]).
#[derive(Clone, Debug)]
pub enum MsgSpec {
    /// `Gossip`: id, level or range, strategy exact?, route index, hops, origin time, payload.
    Gossip {
        /// The id.
        id: IdSpec,
        /// Level or range (255 means u32::MAX).
        lor: u8,
        /// Exact strategy when true.
        exact: bool,
        /// Index into Tree, RingLeft, RingRight, Cleanup, Resend.
        route: u8,
        /// Hop count.
        hops: u8,
        /// Origin time in microseconds.
        time: u16,
        /// Payload length units and fill byte.
        payload: (u16, u8),
    },
    /// `Ack`.
    Ack(IdSpec, u8),
    /// `Igyw`.
    Igyw(IdSpec),
    /// `IgywReply`.
    IgywReply(IdSpec, bool),
    /// `Direct`.
    Direct(IdSpec, (u16, u8)),
    /// `Request`.
    Request(u8, (u16, u8)),
    /// `Response`.
    Response(u8, (u16, u8)),
    /// `Goodbye` with `2 * len` copies of a letter.
    Goodbye(u8, u8),
}

impl MsgSpec {
    /// Appends the input bytes that [`message`] reads back as this message.
    pub fn write(&self, w: &mut Writer) {
        let id = |w: &mut Writer, id: IdSpec| match id {
            IdSpec::Known(i) => {
                w.byte(0x80 | i);
            }
            IdSpec::New(o, n) => {
                w.byte(o & 0x7f).byte(n);
            }
        };
        let payload = |w: &mut Writer, (len, fill): (u16, u8)| {
            w.u16le(len).byte(fill);
        };
        match *self {
            MsgSpec::Gossip {
                id: i,
                lor,
                exact,
                route,
                hops,
                time,
                payload: p,
            } => {
                w.byte(0);
                id(w, i);
                w.byte(lor).byte(u8::from(exact) | (route << 1)).byte(hops);
                w.u16le(time);
                payload(w, p);
            }
            MsgSpec::Ack(i, lor) => {
                w.byte(1);
                id(w, i);
                w.byte(lor);
            }
            MsgSpec::Igyw(i) => {
                w.byte(2);
                id(w, i);
            }
            MsgSpec::IgywReply(i, want) => {
                w.byte(3);
                id(w, i);
                w.byte(u8::from(want));
            }
            MsgSpec::Direct(i, p) => {
                w.byte(4);
                id(w, i);
                payload(w, p);
            }
            MsgSpec::Request(i, p) => {
                w.byte(5).byte(i);
                payload(w, p);
            }
            MsgSpec::Response(i, p) => {
                w.byte(6).byte(i);
                payload(w, p);
            }
            MsgSpec::Goodbye(len, c) => {
                w.byte(7).byte(len).byte(c);
            }
        }
    }
}

/// The id of a message that delivers a payload (gossip, direct), if it is one.
pub fn carried_id(m: &Message) -> Option<MessageId> {
    match m {
        Message::Gossip(g) => Some(g.id),
        Message::Direct { id, .. } => Some(*id),
        _ => None,
    }
}

/// What the engine must deliver for the first acceptable copy of a message with an id: the
/// id, payload, origin time and hops of `Output::Deliver`.
pub fn delivery(m: Message) -> Option<(MessageId, Bytes, u64, u32)> {
    match m {
        Message::Gossip(g) => Some((g.id, g.payload, g.origin_time_us, g.hops)),
        Message::Direct { id, payload } => Some((id, payload, 0, 1)),
        _ => None,
    }
}

/// Which of 16 shapes a sent message has: its kind (gossip by route) and whether a field is
/// at an extreme (a range or level of `u32::MAX`, 0 or over 255 hops, an empty payload).
/// The target round-trips every new shape of an input through the wire, not every send.
pub fn shape(m: &Message) -> u32 {
    let (base, extreme) = match m {
        Message::Gossip(g) => (
            ROUTES.iter().position(|r| *r == g.route).unwrap_or(0) as u32,
            g.level_or_range == u32::MAX || g.hops == 0 || g.hops > 255 || g.payload.is_empty(),
        ),
        Message::Ack { level_or_range, .. } => (5, *level_or_range == u32::MAX),
        Message::Igyw { span, .. } => (6, *span == 0),
        Message::IgywReply { want, .. } => (7, *want),
        _ => (0, true),
    };
    base + 8 * u32::from(extreme)
}

/// Checks a message the engine sent under `strategy` and `max_payload`: one of the four
/// engine kinds, gossip of that strategy within the limit with at least one hop, and, when
/// `round_trip`, unchanged by encoding and decoding.
pub fn check_sent(m: &Message, strategy: Strategy, max_payload: usize, round_trip: bool) {
    match m {
        Message::Gossip(g) => {
            assert_eq!(g.strategy, strategy, "gossip of another strategy");
            assert!(g.payload.len() <= max_payload, "oversized gossip sent");
            assert!(g.hops >= 1, "gossip sent with 0 hops");
        }
        Message::Ack { .. } | Message::Igyw { .. } | Message::IgywReply { .. } => {}
        other => panic!("the engine sent a {}", other.kind()),
    }
    if round_trip {
        let back = wire::decode(wire::encode(m), max_payload)
            .unwrap_or_else(|e| panic!("the engine sent an undecodable {}: {e}", summary(m)));
        assert!(back == *m, "a sent {} changed on the wire", summary(m));
    }
}

/// A one-line description for assertion messages: kind and payload length, not the bytes.
pub fn summary(m: &Message) -> String {
    match m.payload() {
        Some(p) => format!("{} with a {}-byte payload", m.kind(), p.len()),
        None => format!("{m:?}"),
    }
}

/// [`summary`] of a decode result.
pub fn summary_of(r: &Result<Message, raintree_proto::wire::WireError>) -> String {
    match r {
        Ok(m) => summary(m),
        Err(e) => format!("error {e}"),
    }
}
