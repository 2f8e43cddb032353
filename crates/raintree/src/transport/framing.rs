//! Frames inside Noise transport messages (docs/WIRE.md).
//!
//! On the socket: `u16 BE length || Noise message` (at most 65,535 bytes). The decrypted
//! plaintexts form one byte stream of frames: `u32 BE length || protobuf Envelope`. A frame may
//! span several Noise messages and one Noise message may carry many frames, which lets the
//! writer batch small frames and split large ones.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use raintree_proto::pb;
use raintree_proto::wire::{self, Message, WireError};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

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

/// The sending half of a session: encodes messages and seals them into Noise messages.
pub struct Sealer {
    cipher: Arc<snow::StatelessTransportState>,
    nonce: u64,
    plain: BytesMut,
    max_frame: usize,
}

impl Sealer {
    /// A sealer starting at nonce 0.
    pub fn new(cipher: Arc<snow::StatelessTransportState>, max_frame: usize) -> Self {
        Self {
            cipher,
            nonce: 0,
            plain: BytesMut::new(),
            max_frame,
        }
    }

    /// Appends one frame for `msg`; returns its length on the wire (prefix included).
    ///
    /// The payload is copied once, straight into the plaintext buffer that is then encrypted.
    pub fn push(&mut self, msg: &Message) -> Result<usize, WireError> {
        let env = pb::Envelope::from(msg);
        let len = env.encoded_len();
        if len > self.max_frame {
            return Err(WireError::PayloadTooLarge {
                len,
                max: self.max_frame,
            });
        }
        self.plain.reserve(4 + len);
        // len <= max_frame, which the config keeps below u32::MAX.
        self.plain.put_u32(len as u32);
        // The buffer has room for `len` bytes, so encoding cannot fail.
        let _ = env.encode(&mut self.plain);
        Ok(4 + len)
    }

    /// Bytes of plaintext waiting to be sealed.
    pub fn pending(&self) -> usize {
        self.plain.len()
    }

    /// Encrypts every pending frame into `out` as `u16 BE length || Noise message` chunks.
    pub fn seal_into(&mut self, out: &mut BytesMut) -> Result<(), snow::Error> {
        let chunks = self.plain.len().div_ceil(MAX_NOISE_PLAINTEXT);
        out.reserve(self.plain.len() + chunks * (2 + TAG_LEN));
        for chunk in self.plain.chunks(MAX_NOISE_PLAINTEXT) {
            let start = out.len();
            let n = chunk.len() + TAG_LEN;
            out.put_u16(n as u16);
            out.resize(start + 2 + n, 0);
            self.cipher
                .write_message(self.nonce, chunk, &mut out[start + 2..])?;
            self.nonce += 1;
        }
        self.plain.clear();
        Ok(())
    }

    /// Releases a large plaintext buffer left by a big frame so idle connections stay small.
    pub fn shrink(&mut self) {
        if self.plain.capacity() > 2 * MAX_NOISE_MESSAGE {
            self.plain = BytesMut::new();
        }
    }
}

/// The receiving half of a session: opens Noise messages and splits the plaintext into frames.
pub struct Opener {
    cipher: Arc<snow::StatelessTransportState>,
    nonce: u64,
    plain: BytesMut,
    frames: LengthDelimitedCodec,
    max_payload: usize,
    /// Inside a frame: the codec may have taken its length prefix out of `plain` already.
    mid_frame: bool,
}

impl Opener {
    /// An opener starting at nonce 0.
    pub fn new(cipher: Arc<snow::StatelessTransportState>, max_payload: usize) -> Self {
        Self {
            cipher,
            nonce: 0,
            plain: BytesMut::new(),
            frames: frame_codec(max_frame_len(max_payload)),
            max_payload,
            mid_frame: false,
        }
    }

    /// Decrypts one Noise message and appends its plaintext to the frame stream.
    pub fn open(&mut self, noise_msg: &[u8]) -> Result<(), FrameError> {
        if noise_msg.len() < TAG_LEN {
            return Err(FrameError::BadLength(noise_msg.len()));
        }
        let start = self.plain.len();
        // The cipher wants room for the whole message (tag included) to decrypt in place;
        // with less it allocates and copies the message once more.
        let need = noise_msg.len();
        if self.plain.capacity() - start < need {
            // Frames handed out still share the old buffer, so growing copies the partial
            // frame left in it: grow by several messages at a time to copy rarely.
            self.plain.reserve(need.max(4 * MAX_NOISE_MESSAGE));
        }
        self.plain.resize(start + need, 0);
        let opened = self
            .cipher
            .read_message(self.nonce, noise_msg, &mut self.plain[start..]);
        let Ok(n) = opened else {
            self.plain.truncate(start);
            return Err(FrameError::Decrypt);
        };
        self.plain.truncate(start + n);
        self.nonce += 1;
        Ok(())
    }

    /// The next complete frame's message, if the stream holds one.
    pub fn next_message(&mut self) -> Result<Option<(Message, usize)>, FrameError> {
        let buffered = !self.plain.is_empty();
        match self.frames.decode(&mut self.plain) {
            Ok(Some(frame)) => {
                self.mid_frame = false;
                let len = frame.len() + 4;
                let msg = wire::decode(frame.freeze(), self.max_payload)?;
                Ok(Some((msg, len)))
            }
            Ok(None) => {
                // Bytes were waiting but made no frame: a partial prefix, or a prefix the codec
                // consumed while the body is still to come.
                self.mid_frame |= buffered;
                if self.plain.is_empty() && self.plain.capacity() > 8 * MAX_NOISE_MESSAGE {
                    self.plain = BytesMut::new();
                }
                Ok(None)
            }
            Err(e) => Err(FrameError::from_codec(e)),
        }
    }

    /// True when the stream ends between frames.
    pub fn at_boundary(&self) -> bool {
        !self.mid_frame && self.plain.is_empty()
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

    /// A finished Noise XX session: (initiator, responder) transport ciphers.
    fn session() -> (
        Arc<snow::StatelessTransportState>,
        Arc<snow::StatelessTransportState>,
    ) {
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
            Arc::new(i.into_stateless_transport_mode().unwrap()),
            Arc::new(r.into_stateless_transport_mode().unwrap()),
        )
    }

    fn seal(cipher: &snow::StatelessTransportState, nonce: u64, plain: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; plain.len() + TAG_LEN];
        let n = cipher.write_message(nonce, plain, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn a_stream_ending_after_a_bare_length_prefix_is_not_at_a_boundary() {
        let (i, r) = session();
        let frame = encode_frame(&Message::Goodbye { reason: "x".into() });
        let mut opener = Opener::new(r, 1024);
        assert!(opener.at_boundary());
        // Only the 4-byte prefix arrives, then the peer goes away: that is a truncation.
        opener.open(&seal(&i, 0, &frame[..4])).unwrap();
        assert!(opener.next_message().unwrap().is_none());
        assert!(!opener.at_boundary());
        // The body completes the frame, and the stream is between frames again.
        opener.open(&seal(&i, 1, &frame[4..])).unwrap();
        assert!(opener.next_message().unwrap().is_some());
        assert!(opener.next_message().unwrap().is_none());
        assert!(opener.at_boundary());
        // Two bytes of a prefix are mid-frame too.
        opener.open(&seal(&i, 2, &frame[..2])).unwrap();
        assert!(opener.next_message().unwrap().is_none());
        assert!(!opener.at_boundary());
    }
}
