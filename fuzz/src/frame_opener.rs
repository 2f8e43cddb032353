//! `frame_opener`: Noise transport messages and their plaintext chunk boundaries, into the
//! connection reader's [`Opener`] (decrypt, then reassemble `u32 BE length || Envelope` frames).
//!
//! The session is the WIRE.md 7.3 handshake (fixed static and ephemeral keys), run once per
//! process, so a given input always yields the same ciphertexts. The fuzzer writes plaintext;
//! the target seals it with the initiator's cipher, as a peer's writer would, and feeds the
//! responder's [`Opener`].
//!
//! Input: a header byte (bits 0-2 choose `max_payload`, bit 7 chooses the writer), then ops.
//! - Chunk mode (bit 7 clear): ops append plaintext (raw bytes, a valid frame, a bare length
//!   prefix, a run of one byte) and cut it into Noise messages at chosen sizes, or send an
//!   empty, corrupted, too short or out-of-order Noise message. A model parses the same
//!   plaintext stream independently; every frame, error and "need more" from the opener must
//!   match it, frames over `max_payload + 1024` fail as soon as their prefix is complete, and a
//!   stream that stops between frames is never called truncated.
//! - Writer mode (bit 7 set): messages go through the real [`Sealer`] and the socket codec;
//!   every message pushed comes out once, equal and in order (or as the decode error the limit
//!   gives), and the stream is at a frame boundary after each flush.
//!
//! A stream that stops inside a frame must also not claim to be at a boundary.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use arbitrary::Unstructured;
use bytes::{Bytes, BytesMut};
use raintree::transport::framing::{
    encode_frame, max_frame_len, noise_codec, FrameError, Opener, Sealer, Session,
    MAX_NOISE_PLAINTEXT, TAG_LEN,
};
use raintree_proto::wire::{self, Message, WireError, DEFAULT_MAX_PAYLOAD};
use raintree_proto::Address;
use tokio_util::codec::Decoder as _;

use crate::input::{byte, raw, u16le, u32le};
use crate::msg::{message, summary, summary_of, Ctx};

/// Plaintext bytes per input beyond which appends are skipped: encryption dominates the cost
/// of an input, and a few large frames already cross every boundary there is.
pub const MAX_PLAINTEXT: usize = 1 << 20;

/// Noise messages per input beyond which flushes cut at the largest size.
pub const MAX_MESSAGES: usize = 4096;

/// Payload limits the header byte chooses from.
pub const LIMITS: [usize; 8] = [
    0,
    16,
    200,
    4096,
    65_519,
    70_000,
    300_000,
    DEFAULT_MAX_PAYLOAD,
];

/// The sealing (initiator) and opening (responder) ciphers of the WIRE.md session.
pub fn session() -> &'static (Arc<Session>, Arc<Session>) {
    static S: OnceLock<(Arc<Session>, Arc<Session>)> = OnceLock::new();
    S.get_or_init(|| {
        let key = |first: u8| -> Vec<u8> { (0..32).map(|i| first + i).collect() };
        let params: snow::params::NoiseParams = raintree::transport::handshake::NOISE_PARAMS
            .parse()
            .expect("valid noise params");
        let (is, ie, rs, re) = (key(0x41), key(0x61), key(0x81), key(0xa1));
        let mut i = snow::Builder::new(params.clone())
            .local_private_key(&is)
            .expect("key")
            .fixed_ephemeral_key_for_testing_only(&ie)
            .build_initiator()
            .expect("initiator");
        let mut r = snow::Builder::new(params)
            .local_private_key(&rs)
            .expect("key")
            .fixed_ephemeral_key_for_testing_only(&re)
            .build_responder()
            .expect("responder");
        let (mut a, mut b) = (vec![0u8; 1024], vec![0u8; 1024]);
        let n = i.write_message(&[], &mut a).expect("m1");
        r.read_message(&a[..n], &mut b).expect("m1");
        let n = r.write_message(&[], &mut a).expect("m2");
        i.read_message(&a[..n], &mut b).expect("m2");
        let n = i.write_message(&[], &mut a).expect("m3");
        r.read_message(&a[..n], &mut b).expect("m3");
        (
            Arc::new(Session::from_handshake(i).expect("split")),
            Arc::new(Session::from_handshake(r).expect("split")),
        )
    })
}

/// Encrypts `plain` as the Noise transport message with counter `nonce`.
fn seal(nonce: u64, plain: &[u8]) -> BytesMut {
    let mut out = BytesMut::zeroed(plain.len() + TAG_LEN);
    let n = session()
        .0
        .write_message(nonce, plain, &mut out)
        .expect("a plaintext under the Noise limit seals");
    out.truncate(n);
    out
}

/// What the model says the next `next_message` call returns.
enum Expect {
    NeedMore,
    TooLarge,
    Frame(Result<Message, WireError>, usize),
}

/// An independent parse of the plaintext stream (WIRE.md 5).
struct Model {
    stream: Vec<u8>,
    pos: usize,
    max_payload: usize,
}

impl Model {
    fn next(&mut self) -> Expect {
        let rest = &self.stream[self.pos..];
        if rest.len() < 4 {
            return Expect::NeedMore;
        }
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if n > max_frame_len(self.max_payload) {
            return Expect::TooLarge;
        }
        if rest.len() < 4 + n {
            return Expect::NeedMore;
        }
        let frame = Bytes::copy_from_slice(&rest[4..4 + n]);
        self.pos += 4 + n;
        Expect::Frame(wire::decode(frame, self.max_payload), 4 + n)
    }
}

/// Takes every frame the opener has and compares it with the model; false once the
/// connection would close.
fn drain(opener: &mut Opener, model: &mut Model) -> bool {
    loop {
        let got = opener.next_message();
        match (model.next(), got) {
            (Expect::NeedMore, Ok(None)) => {
                if model.pos == model.stream.len() {
                    assert!(
                        opener.at_boundary(),
                        "a stream between frames looks truncated"
                    );
                } else {
                    assert!(
                        !opener.at_boundary(),
                        "a stream inside a frame looks complete"
                    );
                }
                return true;
            }
            (Expect::TooLarge, Err(FrameError::TooLarge)) => return false,
            (Expect::Frame(Ok(want), wlen), Ok(Some((m, len)))) => {
                assert!(
                    m == want,
                    "frame differs from the model: {} vs {}",
                    summary(&m),
                    summary(&want)
                );
                assert_eq!(len, wlen, "frame length differs from the model");
                assert!(len <= 4 + max_frame_len(model.max_payload));
                assert!(m.payload().is_none_or(|p| p.len() <= model.max_payload));
            }
            (Expect::Frame(Err(want), _), Err(FrameError::Decode(e))) => {
                assert_eq!(e, want, "decode error differs from the model");
                return false;
            }
            (want, got) => panic!(
                "opener and model disagree: model {}, opener {:?}",
                match want {
                    Expect::NeedMore => "needs more".to_string(),
                    Expect::TooLarge => "too large".to_string(),
                    Expect::Frame(r, l) => format!("frame of {l} bytes: {}", summary_of(&r)),
                },
                got.map(|o| o.map(|(m, l)| (m.kind(), l)))
            ),
        }
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let header = byte(&mut u);
    let max_payload = LIMITS[usize::from(header & 7)];
    let opener = Opener::new(session().1.clone(), max_payload);
    if header & 0x80 == 0 {
        chunks(&mut u, opener, max_payload);
    } else {
        writer(&mut u, opener, max_payload);
    }
}

fn origins() -> &'static [Address] {
    static A: OnceLock<Vec<Address>> = OnceLock::new();
    A.get_or_init(|| (0..4).map(Address::from_index).collect())
}

/// Payloads up to 330,000 bytes (past the 300,000 limit), and never past what is left of the
/// input's plaintext budget, so skipped work is never built.
fn frame_ctx(room: usize) -> Ctx<'static> {
    Ctx {
        origins: origins(),
        ids: &[],
        unit: 5,
        max_len: room.min(330_000),
    }
}

fn chunks(u: &mut Unstructured<'_>, mut opener: Opener, max_payload: usize) {
    let mut model = Model {
        stream: Vec::new(),
        pos: 0,
        max_payload,
    };
    // A deque, so cutting many small messages off the front stays linear.
    let mut pending: VecDeque<u8> = VecDeque::new();
    let mut messages = 0usize;
    let mut nonce = 0u64;
    let mut ops = 0;
    while !u.is_empty() && ops < 256 {
        ops += 1;
        // Plaintext for one Noise message: the head of `pending`, at most the Noise limit.
        let cut = |pending: &mut VecDeque<u8>, size: usize| -> Vec<u8> {
            let n = size.min(pending.len()).min(MAX_NOISE_PLAINTEXT);
            pending.drain(..n).collect()
        };
        let room = MAX_PLAINTEXT.saturating_sub(model.stream.len() + pending.len());
        match byte(u) % 9 {
            0 => {
                let n = usize::from(byte(u));
                pending.extend(raw(u, n));
            }
            1 => {
                let f = encode_frame(&message(u, &frame_ctx(room)));
                if f.len() <= room {
                    pending.extend(&f);
                }
            }
            2 => pending.extend(u32le(u).to_be_bytes()),
            3 => {
                let n = usize::from(u16le(u)).min(room);
                let fill = byte(u);
                pending.resize(pending.len() + n, fill);
            }
            op @ (4 | 5) => {
                let size = match (op, usize::from(u16le(u))) {
                    (5, _) => 0,
                    (_, 0) => MAX_NOISE_PLAINTEXT,
                    (_, s) => s,
                };
                // An empty Noise message is valid and carries nothing.
                loop {
                    // Past a few thousand messages per input, tiny cuts only slow the search.
                    let size = if messages > MAX_MESSAGES && size > 0 {
                        MAX_NOISE_PLAINTEXT
                    } else {
                        size
                    };
                    let plain = cut(&mut pending, size);
                    opener
                        .open(seal(nonce, &plain))
                        .expect("an authentic message opens");
                    nonce += 1;
                    messages += 1;
                    model.stream.extend_from_slice(&plain);
                    if !drain(&mut opener, &mut model) {
                        return;
                    }
                    if pending.is_empty() || size == 0 {
                        break;
                    }
                }
            }
            6 => {
                let at = usize::from(u16le(u));
                let x = byte(u).max(1);
                let plain = cut(&mut pending, usize::MAX);
                let mut m = seal(nonce, &plain);
                let i = at % m.len();
                m[i] ^= x;
                assert!(matches!(opener.open(m), Err(FrameError::Decrypt)));
                return;
            }
            7 => {
                let n = usize::from(byte(u)) % TAG_LEN;
                let m = BytesMut::from(raw(u, n));
                let len = m.len();
                let r = opener.open(m);
                assert!(matches!(r, Err(FrameError::BadLength(l)) if l == len));
                return;
            }
            _ => {
                let skip = 1 + u64::from(byte(u));
                let plain = cut(&mut pending, usize::MAX);
                let m = seal(nonce + skip, &plain);
                assert!(matches!(opener.open(m), Err(FrameError::Decrypt)));
                return;
            }
        }
    }
}

fn writer(u: &mut Unstructured<'_>, mut opener: Opener, max_payload: usize) {
    let max_frame = max_frame_len(max_payload);
    let mut sealer = Sealer::new(session().0.clone(), max_frame);
    let mut expected: VecDeque<(Result<Message, WireError>, usize)> = VecDeque::new();
    let mut pushed = 0usize;
    let mut ops = 0;
    loop {
        ops += 1;
        let op = if u.is_empty() || ops > 256 {
            None
        } else {
            Some(byte(u) % 3)
        };
        match op {
            Some(0) => {
                let m = message(u, &frame_ctx(MAX_PLAINTEXT.saturating_sub(pushed)));
                let env = wire::encode(&m);
                if pushed + env.len() > MAX_PLAINTEXT {
                    continue;
                }
                pushed += env.len();
                match sealer.push(m) {
                    Ok(len) => {
                        assert!(env.len() <= max_frame, "pushed a frame over the limit");
                        assert_eq!(len, 4 + env.len());
                        expected.push_back((wire::decode(env.clone(), max_payload), len));
                    }
                    Err(WireError::PayloadTooLarge { len, max }) => {
                        assert_eq!((len, max), (env.len(), max_frame));
                        assert!(env.len() > max_frame, "refused a frame within the limit");
                    }
                    Err(e) => panic!("unexpected push error {e}"),
                }
            }
            // The writer shrinks its buffer only once everything is sealed; before, it would
            // drop the unsealed frames.
            Some(2) => {
                if sealer.pending() == 0 {
                    sealer.shrink();
                }
            }
            _ => {
                let mut out = BytesMut::new();
                sealer.seal_into(&mut out).expect("seals");
                assert_eq!(sealer.pending(), 0);
                let mut codec = noise_codec();
                while let Some(m) = codec.decode(&mut out).expect("socket codec") {
                    opener.open(m).expect("an authentic message opens");
                    loop {
                        match opener.next_message() {
                            Ok(Some((m, len))) => {
                                let (want, wlen) = expected.pop_front().expect("an extra frame");
                                let got = Ok(m);
                                assert!(
                                    got == want,
                                    "a frame changed on the way: {} vs {}",
                                    summary_of(&got),
                                    summary_of(&want)
                                );
                                assert_eq!(len, wlen);
                            }
                            Ok(None) => break,
                            Err(FrameError::Decode(e)) => {
                                let (want, _) = expected.pop_front().expect("an extra frame");
                                assert_eq!(Err(e), want, "a different decode error");
                                return;
                            }
                            Err(e) => panic!("writer output refused: {e}"),
                        }
                    }
                }
                assert!(out.is_empty(), "the writer left a partial Noise message");
                assert!(expected.is_empty(), "a pushed frame did not arrive");
                assert!(
                    opener.at_boundary(),
                    "a flushed stream is not at a boundary"
                );
                if op.is_none() {
                    return;
                }
            }
        }
    }
}
