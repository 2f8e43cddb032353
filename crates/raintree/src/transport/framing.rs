//! Frames inside Noise transport messages (docs/WIRE.md).
//!
//! On the socket: `u16 BE length || Noise message` (at most 65,535 bytes). The decrypted
//! plaintexts form one byte stream of frames: `u32 BE length || protobuf Envelope`. A frame may
//! span several Noise messages and one Noise message may carry many frames, which lets the
//! writer batch small frames and split large ones.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;
use raintree_proto::pb;
use raintree_proto::wire::{self, Message, WireError};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use tokio_util::codec::LengthDelimitedCodec;

/// Largest Noise message (Noise spec §3).
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// AES-GCM authentication tag length.
pub const TAG_LEN: usize = 16;
/// Largest plaintext one Noise transport message carries.
pub const MAX_NOISE_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_LEN;
/// Room allowed for an Envelope's fields beyond its payload when bounding frame length.
pub const ENVELOPE_OVERHEAD: usize = 1024;

/// The largest frame (Envelope bytes) accepted when payloads are limited to `max_payload`.
pub fn max_frame_len(max_payload: usize) -> usize {
    max_payload.saturating_add(ENVELOPE_OVERHEAD)
}

/// The socket-level codec: u16 BE length, then one Noise message.
pub fn noise_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(MAX_NOISE_MESSAGE)
        .new_codec()
}

/// The plaintext-stream codec: u32 BE length, then one Envelope of at most `max_frame` bytes.
pub fn frame_codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max_frame)
        .new_codec()
}

/// Why a connection's inbound byte stream was rejected; each closes only that connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame declared a length over the limit.
    #[error("frame longer than the limit")]
    TooLarge,
    /// A Noise message too short to hold its authentication tag.
    #[error("noise message of {0} bytes is shorter than its tag")]
    BadLength(usize),
    /// A Noise message failed authentication.
    #[error("decryption failed")]
    Decrypt,
    /// A frame is not a valid message.
    #[error("undecodable message: {0}")]
    Decode(#[from] WireError),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(std::io::Error),
}

impl FrameError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::TooLarge => "too_large",
            FrameError::BadLength(_) => "bad_length",
            FrameError::Decrypt => "decrypt",
            FrameError::Decode(_) => "decode",
            FrameError::Truncated => "truncated",
            FrameError::Io(_) => "io",
        }
    }

    /// Sorts a codec error: LengthDelimitedCodec reports over-long frames as InvalidData.
    pub fn from_codec(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::InvalidData => FrameError::TooLarge,
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            // FramedRead reports leftover bytes at EOF as "bytes remaining on stream".
            std::io::ErrorKind::Other if e.to_string().contains("bytes remaining") => {
                FrameError::Truncated
            }
            _ => FrameError::Io(e),
        }
    }
}

/// Why a transport message could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The message counter reached 2^64 - 1, which Noise reserves.
    #[error("noise nonces exhausted")]
    NoncesExhausted,
    /// The message failed authentication, or is shorter than its tag.
    #[error("decryption failed")]
    Decrypt,
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// The transport keys of one session after Noise `Split()` (WIRE.md 4): AES-256-GCM, one key
/// per direction.
///
/// snow's transport state copies every plaintext into its output before sealing and every
/// ciphertext before opening; with the keys in hand, ring seals and opens in place instead, so
/// each byte is copied once less each way.
pub struct Session {
    send: LessSafeKey,
    recv: LessSafeKey,
}

/// The AES-GCM nonce of transport message `counter`: 32 zero bits, then the counter big-endian
/// (Noise 12.4).
fn nonce(counter: u64) -> Result<Nonce, CryptoError> {
    if counter == u64::MAX {
        return Err(CryptoError::NoncesExhausted);
    }
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Ok(Nonce::assume_unique_for_key(n))
}

impl Session {
    /// The transport keys of a finished handshake (in either role).
    pub fn from_handshake(mut hs: snow::HandshakeState) -> Result<Self, snow::Error> {
        if !hs.is_handshake_finished() {
            return Err(snow::Error::State(
                snow::error::StateProblem::HandshakeNotFinished,
            ));
        }
        // Split() yields the initiator-to-responder key first (Noise 5.2, 5.3).
        let (i_to_r, r_to_i) = hs.dangerously_get_raw_split();
        let (send, recv) = if hs.is_initiator() {
            (i_to_r, r_to_i)
        } else {
            (r_to_i, i_to_r)
        };
        let key = |k: &[u8; 32]| {
            // A 32-byte key is always a valid AES-256 key.
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k).expect("32-byte key"))
        };
        Ok(Self {
            send: key(&send),
            recv: key(&recv),
        })
    }

    /// Seals `buf` in place as transport message `counter`; returns the tag to append.
    fn seal_in_place(&self, counter: u64, buf: &mut [u8]) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(counter)?, Aad::empty(), buf)
            .map_err(|_| CryptoError::BufferTooSmall)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens transport message `counter` (ciphertext and tag) in place; returns the
    /// plaintext's length, at the start of `buf`.
    fn open_in_place(&self, counter: u64, buf: &mut [u8]) -> Result<usize, CryptoError> {
        self.recv
            .open_in_place(nonce(counter)?, Aad::empty(), buf)
            .map(|p| p.len())
            .map_err(|_| CryptoError::Decrypt)
    }

    /// Seals `plain` as transport message `counter` into `out` (ciphertext, then tag); returns
    /// the message's length. For tests and tools; the connection's [`Sealer`] seals in place.
    pub fn write_message(
        &self,
        counter: u64,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let n = plain.len();
        let buf = stage(out, plain, TAG_LEN)?;
        let tag = self.seal_in_place(counter, &mut buf[..n])?;
        buf[n..].copy_from_slice(&tag);
        Ok(n + TAG_LEN)
    }

    /// Opens transport message `counter` into `out`; returns the plaintext's length.
    pub fn read_message(
        &self,
        counter: u64,
        msg: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let buf = stage(out, msg, 0)?;
        self.open_in_place(counter, buf)
    }
}

/// Copies `src` to the start of `out` and returns it with `room` bytes after it, if `out`
/// holds that much: the in-place cipher works on the copy, leaving the caller's input alone.
fn stage<'a>(out: &'a mut [u8], src: &[u8], room: usize) -> Result<&'a mut [u8], CryptoError> {
    let buf = out
        .get_mut(..src.len() + room)
        .ok_or(CryptoError::BufferTooSmall)?;
    buf[..src.len()].copy_from_slice(src);
    Ok(buf)
}

/// The sending half of a session: encodes messages straight into the Noise messages that
/// carry them and seals those in place.
///
/// `out` holds sealed Noise messages (`u16 BE length || ciphertext || tag`) and, at its end,
/// the open one: a length prefix still to be written at `open_at`, then plaintext.
pub struct Sealer {
    session: Arc<Session>,
    nonce: u64,
    out: BytesMut,
    open_at: Option<usize>,
    /// A frame too long for one Noise message, encoded here and then copied across several.
    big: BytesMut,
    max_frame: usize,
    /// Set when a message could not be sealed; [`Sealer::seal_into`] reports it.
    failed: Option<CryptoError>,
}

impl Sealer {
    /// A sealer starting at nonce 0.
    pub fn new(session: Arc<Session>, max_frame: usize) -> Self {
        Self {
            session,
            nonce: 0,
            out: BytesMut::new(),
            open_at: None,
            big: BytesMut::new(),
            max_frame,
            failed: None,
        }
    }

    /// Plaintext bytes in the open Noise message.
    fn open_len(&self) -> usize {
        self.open_at.map_or(0, |at| self.out.len() - at - 2)
    }

    /// Room left in the open Noise message, opening one if none is.
    fn room(&mut self) -> usize {
        if self.open_at.is_none() {
            self.open_at = Some(self.out.len());
            self.out.put_u16(0);
        }
        MAX_NOISE_PLAINTEXT - self.open_len()
    }

    /// Seals the open Noise message, if any.
    fn close(&mut self) {
        let Some(at) = self.open_at.take() else {
            return;
        };
        let n = self.out.len() - at - 2;
        match self
            .session
            .seal_in_place(self.nonce, &mut self.out[at + 2..])
        {
            Ok(tag) => {
                self.out.extend_from_slice(&tag);
                // n + TAG_LEN <= MAX_NOISE_MESSAGE, so it fits the u16 prefix.
                self.out[at..at + 2].copy_from_slice(&((n + TAG_LEN) as u16).to_be_bytes());
                self.nonce += 1;
            }
            Err(e) => {
                self.out.truncate(at);
                self.failed = Some(e);
            }
        }
    }

    /// Appends one frame for `msg`; returns its length on the wire (prefix included).
    ///
    /// The payload is copied once, straight into the Noise message that is then sealed. `msg`
    /// is taken by value so that encoding does not clone (and later drop) its payload.
    pub fn push(&mut self, msg: Message) -> Result<usize, WireError> {
        let env = pb::Envelope::from(msg);
        let len = env.encoded_len();
        if len > self.max_frame {
            return Err(WireError::PayloadTooLarge {
                len,
                max: self.max_frame,
            });
        }
        if 4 + len <= MAX_NOISE_PLAINTEXT {
            // A small frame goes whole into one Noise message: end the open one early rather
            // than split the frame, so the receiver can hand it on without copying it.
            if self.room() < 4 + len {
                self.close();
                self.room();
            }
            self.out.reserve(4 + len + TAG_LEN);
            // len <= max_frame, which the config keeps below u32::MAX.
            self.out.put_u32(len as u32);
            // The buffer has room for `len` bytes, so encoding cannot fail.
            let _ = env.encode(&mut self.out);
        } else {
            let mut big = std::mem::take(&mut self.big);
            big.clear();
            big.reserve(4 + len);
            big.put_u32(len as u32);
            let _ = env.encode(&mut big);
            self.out
                .reserve(big.len() + big.len().div_ceil(MAX_NOISE_PLAINTEXT) * (2 + TAG_LEN));
            let mut rest = &big[..];
            while !rest.is_empty() {
                let room = self.room();
                if room == 0 {
                    self.close();
                    continue;
                }
                let n = room.min(rest.len());
                self.out.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            self.big = big;
        }
        Ok(4 + len)
    }

    /// Bytes buffered (sealed or not) and not yet handed out by [`Sealer::seal_into`].
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Seals the open Noise message and moves every sealed one into `out`, each as
    /// `u16 BE length || Noise message`.
    pub fn seal_into(&mut self, out: &mut BytesMut) -> Result<(), CryptoError> {
        self.close();
        if let Some(e) = self.failed {
            self.out.clear();
            return Err(e);
        }
        if out.is_empty() {
            // The caller's (empty) buffer becomes the next one to fill: no copy.
            std::mem::swap(out, &mut self.out);
        } else {
            out.extend_from_slice(&self.out);
            self.out.clear();
        }
        Ok(())
    }

    /// Releases large buffers left by big frames so idle connections stay small.
    pub fn shrink(&mut self) {
        if self.out.is_empty() && self.out.capacity() > 2 * MAX_NOISE_MESSAGE {
            self.out = BytesMut::new();
        }
        if self.big.capacity() > 2 * MAX_NOISE_MESSAGE {
            self.big = BytesMut::new();
        }
    }
}

/// The receiving half of a session: opens Noise messages in place and splits their
/// plaintext into frames.
///
/// A frame inside one Noise message is handed on as a slice of that message's buffer, without
/// a copy; only the pieces of a frame that spans messages are gathered into `partial`.
pub struct Opener {
    session: Arc<Session>,
    nonce: u64,
    /// Plaintext of the last opened message not yet split into frames.
    cur: BytesMut,
    /// The beginning of a frame (length prefix included) that continues in a later message.
    partial: BytesMut,
    max_frame: usize,
    max_payload: usize,
}

impl Opener {
    /// An opener starting at nonce 0.
    pub fn new(session: Arc<Session>, max_payload: usize) -> Self {
        Self {
            session,
            nonce: 0,
            cur: BytesMut::new(),
            partial: BytesMut::new(),
            max_frame: max_frame_len(max_payload),
            max_payload,
        }
    }

    /// Decrypts one Noise message in place and makes its plaintext the next part of the frame
    /// stream. Call [`Opener::next_message`] until it returns `None` before the next one.
    pub fn open(&mut self, mut noise_msg: BytesMut) -> Result<(), FrameError> {
        if noise_msg.len() < TAG_LEN {
            return Err(FrameError::BadLength(noise_msg.len()));
        }
        let n = self
            .session
            .open_in_place(self.nonce, &mut noise_msg)
            .map_err(|_| FrameError::Decrypt)?;
        noise_msg.truncate(n);
        self.nonce += 1;
        // Whatever the last message left unframed was moved to `partial` by next_message.
        debug_assert!(self.cur.is_empty());
        self.cur = noise_msg;
        Ok(())
    }

    /// The length a frame's prefix declares, checked against the limit.
    fn declared(&self, prefix: &[u8]) -> Result<usize, FrameError> {
        let n = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if n > self.max_frame {
            return Err(FrameError::TooLarge);
        }
        Ok(n)
    }

    /// Moves `n` bytes from the front of `cur` to the end of `partial`.
    fn gather(&mut self, n: usize) {
        let n = n.min(self.cur.len());
        self.partial.extend_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        if self.cur.is_empty() {
            // Let go of the message's buffer: frames handed on keep only what they need.
            self.cur = BytesMut::new();
        }
    }

    /// The next complete frame's message, if the stream holds one.
    pub fn next_message(&mut self) -> Result<Option<(Message, usize)>, FrameError> {
        let frame = if !self.partial.is_empty() {
            if self.partial.len() < 4 {
                self.gather(4 - self.partial.len());
                if self.partial.len() < 4 {
                    return Ok(None);
                }
            }
            let len = self.declared(&self.partial[..4])?;
            let need = 4 + len - self.partial.len();
            if need > 0 {
                // Bounded by the frame limit just checked.
                self.partial.reserve(need);
                self.gather(need);
            }
            if self.partial.len() < 4 + len {
                return Ok(None);
            }
            let mut frame = std::mem::take(&mut self.partial);
            frame.advance(4);
            frame.freeze()
        } else {
            if self.cur.len() < 4 {
                self.gather(self.cur.len());
                return Ok(None);
            }
            let len = self.declared(&self.cur[..4])?;
            if self.cur.len() < 4 + len {
                self.partial.reserve(4 + len);
                self.gather(self.cur.len());
                return Ok(None);
            }
            // Moving the start past the prefix touches no reference count (the buffer's count
            // is shared with frames the application may be dropping on another core).
            self.cur.advance(4);
            let frame = self.cur.split_to(len).freeze();
            if self.cur.is_empty() {
                self.cur = BytesMut::new();
            }
            frame
        };
        let len = 4 + frame.len();
        let msg = wire::decode(frame, self.max_payload)?;
        Ok(Some((msg, len)))
    }

    /// True when the stream ends between frames.
    pub fn at_boundary(&self) -> bool {
        self.partial.is_empty() && self.cur.is_empty()
    }
}

/// Encodes one message as a frame (`u32 BE length || Envelope`), unencrypted: for test
/// vectors and tools.
pub fn encode_frame(msg: &Message) -> Bytes {
    let env = wire::encode(msg);
    let mut out = BytesMut::with_capacity(4 + env.len());
    out.put_u32(env.len() as u32);
    out.extend_from_slice(&env);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    /// A finished Noise XX session: (initiator, responder) transport keys.
    fn session() -> (Arc<Session>, Arc<Session>) {
        let params: snow::params::NoiseParams =
            super::super::handshake::NOISE_PARAMS.parse().unwrap();
        let keys = |b: &snow::Builder| b.generate_keypair().unwrap().private;
        let ik = keys(&snow::Builder::new(params.clone()));
        let rk = keys(&snow::Builder::new(params.clone()));
        let mut i = snow::Builder::new(params.clone())
            .local_private_key(&ik)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params)
            .local_private_key(&rk)
            .unwrap()
            .build_responder()
            .unwrap();
        let (mut a, mut b) = (vec![0u8; 1024], vec![0u8; 1024]);
        for step in 0..3 {
            let (w, rd) = if step == 1 {
                (&mut r, &mut i)
            } else {
                (&mut i, &mut r)
            };
            let n = w.write_message(&[], &mut a).unwrap();
            rd.read_message(&a[..n], &mut b).unwrap();
        }
        (
            Arc::new(Session::from_handshake(i).unwrap()),
            Arc::new(Session::from_handshake(r).unwrap()),
        )
    }

    fn seal(session: &Session, nonce: u64, plain: &[u8]) -> BytesMut {
        let mut out = vec![0u8; plain.len() + TAG_LEN];
        let n = session.write_message(nonce, plain, &mut out).unwrap();
        out.truncate(n);
        BytesMut::from(&out[..])
    }

    #[test]
    fn a_stream_ending_after_a_bare_length_prefix_is_not_at_a_boundary() {
        let (i, r) = session();
        let frame = encode_frame(&Message::Goodbye { reason: "x".into() });
        let mut opener = Opener::new(r, 1024);
        assert!(opener.at_boundary());
        // Only the 4-byte prefix arrives, then the peer goes away: that is a truncation.
        opener.open(seal(&i, 0, &frame[..4])).unwrap();
        assert!(opener.next_message().unwrap().is_none());
        assert!(!opener.at_boundary());
        // The body completes the frame, and the stream is between frames again.
        opener.open(seal(&i, 1, &frame[4..])).unwrap();
        assert!(opener.next_message().unwrap().is_some());
        assert!(opener.next_message().unwrap().is_none());
        assert!(opener.at_boundary());
        // Two bytes of a prefix are mid-frame too.
        opener.open(seal(&i, 2, &frame[..2])).unwrap();
        assert!(opener.next_message().unwrap().is_none());
        assert!(!opener.at_boundary());
    }

    fn direct(nonce: u64, len: usize) -> Message {
        Message::Direct {
            id: raintree_proto::wire::MessageId {
                origin: raintree_proto::Address([3; 20]),
                nonce,
            },
            payload: Bytes::from(vec![nonce as u8; len]),
        }
    }

    #[test]
    fn small_frames_stay_whole_in_one_noise_message_and_big_ones_fill_them() {
        let (i, r) = session();
        let mut sealer = Sealer::new(i, max_frame_len(1 << 20));
        let mut opener = Opener::new(r, 1 << 20);
        // 200 small frames, then one frame of three Noise messages' worth, then small again.
        let mut sent: Vec<Message> = (0..200).map(|n| direct(n, 1000)).collect();
        sent.push(direct(200, 3 * MAX_NOISE_PLAINTEXT));
        sent.extend((201..260).map(|n| direct(n, 1000)));
        for m in &sent {
            sealer.push(m.clone()).unwrap();
        }
        let mut wire = BytesMut::new();
        sealer.seal_into(&mut wire).unwrap();
        assert_eq!(sealer.pending(), 0);
        let mut codec = noise_codec();
        let (mut got, mut sizes, mut boundaries) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(m) = codec.decode(&mut wire).unwrap() {
            sizes.push(m.len());
            opener.open(m).unwrap();
            while let Some((msg, _)) = opener.next_message().unwrap() {
                got.push(msg);
            }
            boundaries.push(opener.at_boundary());
        }
        assert!(wire.is_empty());
        assert_eq!(got, sent);
        // The messages before the big frame carry whole small frames only.
        let before = 200 * (4 + 1000 + 34) / MAX_NOISE_PLAINTEXT;
        assert!(boundaries[..before].iter().all(|b| *b), "{boundaries:?}");
        // The big frame's pieces fill their messages to the limit.
        let full = sizes.iter().filter(|s| **s == MAX_NOISE_MESSAGE).count();
        assert!(full >= 3, "{sizes:?}");
        assert!(opener.at_boundary());
    }
}
