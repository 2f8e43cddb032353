//! The seed corpora: small inputs that reach every message kind, the WIRE.md vectors, and
//! engine scenarios that exercise each protocol layer. `examples/gen_corpus.rs` writes them
//! to `fuzz/corpus/<target>/`; a test checks the committed files match.

use raintree_proto::wire::{self, Gossip, Message, MessageId, Route, Strategy};
use raintree_proto::Address;

use crate::engine::{self, Header, Op};
use crate::handshake_payload::VECTOR_STATIC;
use crate::input::Writer;
use crate::msg::{IdSpec, MsgSpec};

/// One seed: target, file name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// WIRE.md 7.4 `envelope-direct`.
pub const ENVELOPE_DIRECT: &str =
    "2a310a1f0a1465b60673d6ed884bf01c2c222d82ada0740f29ac110807060504030201120e68656c6c6f207261696e74726565";
/// WIRE.md 7.4 `envelope-goodbye`.
pub const ENVELOPE_GOODBYE: &str = "420a0a0873687574646f776e";
/// WIRE.md 7.2 `initiator-handshake-payload`.
pub const HANDSHAKE_PAYLOAD: &str = "0a2079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad04966412403d4957c6897e84bf3ae137503d6737c1f8e150d6ef79006fbfc4dd6eaae38223e661f2bb9f8dc685cbc3744028c32ebd1d5a86829f527a1127102e76af593a0c";

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    wire_seeds(&mut out);
    frame_seeds(&mut out);
    handshake_seeds(&mut out);
    engine_seeds(&mut out);
    out
}

fn sample_messages() -> Vec<(&'static str, Message)> {
    let id = MessageId {
        origin: Address::from_index(1),
        nonce: 0x0102_0304_0506_0708,
    };
    let g = |strategy, route| Gossip {
        id,
        level_or_range: 3,
        strategy,
        route,
        origin_time_us: 1_700_000_000_000_000,
        hops: 2,
        payload: bytes::Bytes::from_static(b"block"),
        ..Gossip::default()
    };
    vec![
        (
            "gossip-reference-tree",
            Message::Gossip(g(Strategy::Reference, Route::Tree)),
        ),
        (
            "gossip-exact-ring-left",
            Message::Gossip(g(Strategy::Exact, Route::RingLeft)),
        ),
        (
            "gossip-exact-resend",
            Message::Gossip(g(Strategy::Exact, Route::Resend)),
        ),
        (
            "ack",
            Message::Ack {
                id,
                level_or_range: 2,
            },
        ),
        ("igyw", Message::Igyw { id, span: 0 }),
        ("igyw-reply-want", Message::IgywReply { id, want: true }),
        (
            "request",
            Message::Request {
                id: 9,
                payload: bytes::Bytes::from_static(b"ping"),
            },
        ),
        (
            "response-empty",
            Message::Response {
                id: 9,
                payload: bytes::Bytes::new(),
            },
        ),
    ]
}

fn wire_seeds(out: &mut Vec<Seed>) {
    out.push((
        "wire_decode",
        "wire-md-envelope-direct".into(),
        unhex(ENVELOPE_DIRECT),
    ));
    out.push((
        "wire_decode",
        "wire-md-envelope-goodbye".into(),
        unhex(ENVELOPE_GOODBYE),
    ));
    for (name, m) in sample_messages() {
        out.push(("wire_decode", name.into(), wire::encode(&m).to_vec()));
    }
}

/// Builds a chunk-mode or writer-mode `frame_opener` input.
struct Frames(Writer);

impl Frames {
    fn new(limit: u8, writer: bool) -> Self {
        let mut w = Writer::new();
        w.byte(limit | if writer { 0x80 } else { 0 });
        Frames(w)
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.byte(0).byte(b.len() as u8).raw(b);
        self
    }
    fn frame(&mut self, m: MsgSpec) -> &mut Self {
        self.0.byte(1);
        m.write(&mut self.0);
        self
    }
    fn header(&mut self, len: u32) -> &mut Self {
        self.0.byte(2).u32le(len);
        self
    }
    fn fill(&mut self, len: u16, b: u8) -> &mut Self {
        self.0.byte(3).u16le(len).byte(b);
        self
    }
    fn flush(&mut self, chunk: u16) -> &mut Self {
        self.0.byte(4).u16le(chunk);
        self
    }
    fn empty(&mut self) -> &mut Self {
        self.0.byte(5).u16le(0);
        self
    }
    fn corrupt(&mut self, at: u16, x: u8) -> &mut Self {
        self.0.byte(6).u16le(at).byte(x);
        self
    }
    fn short(&mut self, b: &[u8]) -> &mut Self {
        self.0.byte(7).byte(b.len() as u8).raw(b);
        self
    }
    fn nonce(&mut self, skip: u8) -> &mut Self {
        self.0.byte(8).byte(skip);
        self
    }
    fn push(&mut self, m: MsgSpec) -> &mut Self {
        self.0.byte(0);
        m.write(&mut self.0);
        self
    }
    fn seal(&mut self) -> &mut Self {
        self.0.byte(1);
        self
    }
    fn shrink(&mut self) -> &mut Self {
        self.0.byte(2);
        self
    }
    fn done(&self) -> Vec<u8> {
        self.0.finish()
    }
}

fn gossip(id: IdSpec, lor: u8, route: u8, len: u16) -> MsgSpec {
    MsgSpec::Gossip {
        id,
        lor,
        exact: true,
        route,
        hops: 1,
        time: 7,
        payload: (len, 0xab),
    }
}

fn frame_seeds(out: &mut Vec<Seed>) {
    let frame_direct = {
        let mut v = 0x33u32.to_be_bytes().to_vec();
        v.extend(unhex(ENVELOPE_DIRECT));
        v
    };
    let mut add = |name: &str, f: &Frames| out.push(("frame_opener", name.into(), f.done()));
    add(
        "wire-md-frame-direct",
        Frames::new(7, false).raw(&frame_direct).flush(0),
    );
    add(
        "three-frames-one-message",
        Frames::new(3, false)
            .frame(MsgSpec::Ack(IdSpec::New(1, 2), 3))
            .frame(MsgSpec::Igyw(IdSpec::New(2, 3)))
            .frame(MsgSpec::Goodbye(4, 0))
            .flush(0),
    );
    add(
        "frame-split-byte-by-byte",
        Frames::new(3, false)
            .frame(MsgSpec::Direct(IdSpec::New(1, 1), (20, 7)))
            .flush(1),
    );
    // 100,000-byte payload: a frame over two Noise messages, then cut at 1000 bytes.
    add(
        "large-frame-spans-messages",
        Frames::new(6, false)
            .frame(gossip(IdSpec::New(0, 9), 27, 0, 20_000))
            .flush(0),
    );
    add(
        "large-frame-small-chunks",
        Frames::new(6, false)
            .frame(gossip(IdSpec::New(0, 9), 27, 0, 20_000))
            .flush(1000),
    );
    add(
        "prefix-then-body-later",
        Frames::new(3, false)
            .header(10)
            .flush(0)
            .fill(10, 0)
            .flush(0),
    );
    add(
        "prefix-over-limit",
        Frames::new(1, false).header(16 + 1024 + 1).flush(0),
    );
    add(
        "payload-over-limit",
        Frames::new(0, false)
            .frame(MsgSpec::Request(1, (1, 1)))
            .flush(0),
    );
    add("empty-frame", Frames::new(3, false).header(0).flush(0));
    add(
        "empty-noise-message",
        Frames::new(3, false)
            .empty()
            .frame(MsgSpec::Igyw(IdSpec::New(1, 1)))
            .empty()
            .flush(0),
    );
    add(
        "corrupted-message",
        Frames::new(3, false)
            .frame(MsgSpec::Igyw(IdSpec::New(1, 1)))
            .corrupt(5, 1),
    );
    add("short-message", Frames::new(3, false).short(&[1, 2, 3]));
    add(
        "replayed-nonce-gap",
        Frames::new(3, false)
            .frame(MsgSpec::Igyw(IdSpec::New(1, 1)))
            .flush(0)
            .nonce(0),
    );
    add(
        "writer-every-kind",
        Frames::new(3, true)
            .push(gossip(IdSpec::New(0, 1), 4, 1, 3))
            .push(MsgSpec::Ack(IdSpec::New(1, 2), 3))
            .push(MsgSpec::Igyw(IdSpec::New(2, 3)))
            .push(MsgSpec::IgywReply(IdSpec::New(2, 3), true))
            .push(MsgSpec::Direct(IdSpec::New(1, 4), (10, 1)))
            .push(MsgSpec::Request(5, (10, 2)))
            .push(MsgSpec::Response(5, (0, 0)))
            .push(MsgSpec::Goodbye(4, 3))
            .seal(),
    );
    add(
        "writer-large-then-shrink",
        Frames::new(6, true)
            .push(MsgSpec::Direct(IdSpec::New(1, 4), (30_000, 1)))
            .seal()
            .shrink()
            .push(MsgSpec::Ack(IdSpec::New(1, 2), 3))
            .seal(),
    );
    add(
        "writer-payload-over-limit",
        Frames::new(1, true)
            .push(MsgSpec::Request(5, (10, 2)))
            .seal(),
    );
}

fn handshake_seeds(out: &mut Vec<Seed>) {
    let valid = unhex(HANDSHAKE_PAYLOAD);
    let with = |mode: u8, rest: &[&[u8]]| {
        let mut v = vec![mode];
        for r in rest {
            v.extend_from_slice(r);
        }
        v
    };
    let mut add = |name: &str, v: Vec<u8>| out.push(("handshake_payload", name.into(), v));
    add("wire-md-valid-payload", with(0, &[&valid]));
    add(
        "wire-md-payload-given-static",
        with(1, &[&VECTOR_STATIC, &valid]),
    );
    add(
        "wire-md-payload-short-static",
        with(2, &[&[31], &VECTOR_STATIC[..31], &valid]),
    );
    add(
        "wire-md-payload-wrong-static",
        with(1, &[&[7u8; 32], &valid]),
    );
    add("truncated-payload", with(0, &[&valid[..60]]));
    add("empty-payload", with(0, &[]));
    let mut mutate = vec![3, 0];
    mutate.extend_from_slice(&VECTOR_STATIC);
    mutate.push(5);
    for (at, x) in [(1u16, 0x01u8), (40, 0x80), (200, 0x12)] {
        mutate.extend_from_slice(&at.to_le_bytes());
        mutate.push(x);
    }
    add("signed-then-mutated", mutate);
    add("signed-unmutated", {
        let mut v = vec![3, 1];
        v.extend_from_slice(&[9u8; 32]);
        v.push(0);
        v
    });
}

fn header(flags: u8) -> Header {
    Header {
        flags,
        engines: 3,
        extra: 2,
        ack_ms: 99,
        retries: 2,
        igyw_ms: 99,
        skip: 2,
        cleanup_ms: 199,
        capacity: 32,
        ttl_ms: 4_999,
        max_payload: 64,
    }
}

fn engine_seeds(out: &mut Vec<Seed>) {
    use Op::*;
    let bcast = |node| Broadcast {
        node,
        len: 8,
        fill: node,
    };
    let mut add = |name: &str, h: Header, ops: &[Op]| {
        out.push(("engine", name.into(), engine::encode(&h, ops)))
    };
    // Flags: bit 0 exact, bit 1 ACKs, bits 2-3 redundancy, bit 4 clean-up.
    add(
        "reference-acks-deliver-all",
        header(0b10),
        &[bcast(0), DeliverAll, bcast(1), DeliverAll, Advance(200)],
    );
    add(
        "exact-acks-deliver-all",
        header(0b11),
        &[bcast(0), DeliverAll, bcast(2), DeliverAll, Advance(200)],
    );
    add(
        "exact-lost-copies-resend",
        header(0b11),
        &[
            bcast(0),
            Drop(0),
            Deliver(0),
            Advance(101),
            DeliverAll,
            Advance(101),
            DeliverAll,
            Advance(6000),
        ],
    );
    add(
        "reference-timeouts-resend",
        header(0b10),
        &[
            bcast(1),
            Drop(1),
            Advance(101),
            DeliverAll,
            Advance(101),
            Advance(6000),
        ],
    );
    add(
        "redundancy-both-cleanup",
        header(0b11_1100),
        &[
            bcast(0),
            Drop(0),
            DeliverAll,
            Advance(201),
            DeliverAll,
            Advance(101),
            DeliverAll,
            Advance(101),
            DeliverAll,
        ],
    );
    add(
        "cleanup-igyw-replies",
        header(0b1_0011),
        &[
            vec![bcast(0), Advance(201)],
            // Only the neighbour offered to may answer; which one that is depends on the
            // sorted addresses, so every peer answers WANT.
            (1..5)
                .map(|from| Inject {
                    node: 0,
                    from,
                    msg: MsgSpec::IgywReply(IdSpec::Known(0), true),
                })
                .collect(),
            vec![Advance(101), Advance(101), DeliverAll],
        ]
        .concat(),
    );
    add(
        "injected-acks-and-range-inflation",
        header(0b11),
        &[
            bcast(0),
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Ack(IdSpec::Known(0), 1),
            },
            Inject {
                node: 1,
                from: 2,
                msg: gossip(IdSpec::Known(0), 2, 0, 4),
            },
            Inject {
                node: 1,
                from: 2,
                msg: gossip(IdSpec::Known(0), 5, 0, 4),
            },
            Inject {
                node: 1,
                from: 3,
                msg: gossip(IdSpec::Known(0), 255, 4, 4),
            },
            Replay {
                node: 2,
                from: 0,
                pick: 0,
            },
            DeliverAll,
        ],
    );
    let mut tiny = header(0b10);
    tiny.capacity = 1;
    add(
        "capacity-one-eviction",
        tiny,
        &[
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Direct(IdSpec::New(1, 1), (4, 1)),
            },
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Direct(IdSpec::New(1, 2), (4, 1)),
            },
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Direct(IdSpec::New(1, 1), (4, 1)),
            },
            bcast(0),
            bcast(0),
            DeliverAll,
        ],
    );
    // Seen-set of 4, one id per origin once it holds 2, and room for 2 held messages: the
    // third direct id of one origin is refused as a flood, another origin's still delivered.
    let mut share = header(0b10);
    share.capacity = 4 + 4 * 33;
    share.ttl_ms = 0x8000 | 4_999;
    add(
        "flood-share",
        share,
        &[
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Direct(IdSpec::New(1, 1), (4, 1)),
            },
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Direct(IdSpec::New(1, 2), (4, 1)),
            },
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Direct(IdSpec::New(1, 3), (4, 1)),
            },
            Inject {
                node: 0,
                from: 2,
                msg: MsgSpec::Direct(IdSpec::New(2, 1), (4, 1)),
            },
            bcast(1),
            DeliverAll,
        ],
    );
    add(
        "peer-list-changes",
        header(0b11),
        &[
            SetPeers {
                node: 0,
                mask: 0b0000_0110,
            },
            bcast(0),
            SetPeers {
                node: 1,
                mask: 0x8000 | 0b1,
            },
            Duplicate(0),
            DeliverAll,
            SetPeers {
                node: 0,
                mask: 0xffff,
            },
            bcast(0),
            DeliverAll,
            Advance(6000),
        ],
    );
    // The transport reports the tree children unreachable before their ACKs: the sends fail
    // at once and are re-delegated, the peers suspected.
    add(
        "unreachable-redelegates",
        header(0b11),
        &[
            vec![bcast(0)],
            (1..5).map(|peer| Unreachable { node: 0, peer }).collect(),
            vec![DeliverAll, Advance(6000), DeliverAll],
        ]
        .concat(),
    );
    add(
        "every-rejected-kind",
        header(0b10),
        &[
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Request(1, (1, 1)),
            },
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Response(1, (1, 1)),
            },
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Goodbye(3, 1),
            },
            Inject {
                node: 0,
                from: 1,
                msg: gossip(IdSpec::New(2, 2), 1, 0, 1),
            },
            Inject {
                node: 0,
                from: 1,
                msg: MsgSpec::Direct(IdSpec::New(1, 3), (70, 1)),
            },
            Broadcast {
                node: 0,
                len: 200,
                fill: 0,
            },
        ],
    );
}

/// Known failures of the stricter checks (`RAINTREE_FUZZ_STRICT=1`), written to
/// `fuzz/repro/<target>/`: each passes the default checks and fails the strict one.
pub fn strict_repros() -> Vec<Seed> {
    use Op::*;
    let mut tiny = header(0b10);
    tiny.capacity = 1;
    vec![
        (
            "engine",
            "evicted-id-delivered-twice".into(),
            engine::encode(
                &tiny,
                &[
                    Inject {
                        node: 0,
                        from: 1,
                        msg: MsgSpec::Direct(IdSpec::New(1, 1), (1, 1)),
                    },
                    Inject {
                        node: 0,
                        from: 1,
                        msg: MsgSpec::Direct(IdSpec::New(1, 2), (1, 1)),
                    },
                    Inject {
                        node: 0,
                        from: 1,
                        msg: MsgSpec::Direct(IdSpec::New(1, 1), (1, 1)),
                    },
                ],
            ),
        ),
        (
            // Redundancy on both sides, a seen-set of one id, two broadcasts at once: the ring
            // copies evict each other and go round for ever (the target's step cap ends it).
            "engine",
            "ring-livelock-capacity-one".into(),
            engine::encode(
                &Header {
                    flags: 0b1100,
                    engines: 2,
                    extra: 0,
                    capacity: 1,
                    ttl_ms: 60_000,
                    ..header(0)
                },
                &[
                    Broadcast {
                        node: 0,
                        len: 1,
                        fill: 0,
                    },
                    Broadcast {
                        node: 1,
                        len: 1,
                        fill: 0,
                    },
                    DeliverAll,
                    DeliverAll,
                    DeliverAll,
                    DeliverAll,
                    DeliverAll,
                    DeliverAll,
                    DeliverAll,
                    DeliverAll,
                    DeliverAll,
                ],
            ),
        ),
        (
            "frame_opener",
            "prefix-only-looks-like-boundary".into(),
            Frames::new(3, false).header(10).flush(0).done(),
        ),
    ]
}
