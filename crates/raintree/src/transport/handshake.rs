//! The Noise XX handshake that binds each side's Ed25519 identity to the session (docs/WIRE.md).
//!
//! Each side signs `SIGNATURE_PREFIX || its Noise static public key` with its Ed25519 key and
//! sends the key and signature as a `HandshakePayload` inside the encrypted handshake message
//! that also carries its static key (message 2 for the responder, 3 for the initiator).

use std::sync::Arc;

use ed25519_dalek::{Signature, VerifyingKey};
use futures::StreamExt;
use prost::Message as _;
use raintree_proto::{pb, Address};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::framing::{noise_codec, Session, MAX_NOISE_MESSAGE};
use super::identity::Identity;

/// The Noise protocol name: pattern XX, X25519, AES-256-GCM, SHA-256.
///
/// AES-GCM because it seals and opens about 3x faster than ChaCha20-Poly1305 on CPUs with AES
/// instructions (transport_bench's `cipher` case); SHA-256 because both it and the cipher then
/// run on ring, and the hash barely shows in the handshake's cost.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_AESGCM_SHA256";

/// Domain-separation prefix of the identity signature over the Noise static public key.
pub const SIGNATURE_PREFIX: &[u8] = b"raintree-noise-static-key:";

/// Reads Noise messages (u16 BE length prefix) from a connection's read half (any byte
/// stream: a tokio socket half by default, the `net` seam's half inside the transport).
pub type NoiseReader<R = OwnedReadHalf> = FramedRead<R, LengthDelimitedCodec>;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or the framing was invalid.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection before the handshake finished.
    #[error("closed during handshake")]
    Closed,
    /// A Noise message failed (bad length, decryption, DH).
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    /// The first message carried a payload, which XX message 1 never does here.
    #[error("unexpected payload in handshake message 1")]
    UnexpectedPayload,
    /// The identity payload is not a valid `HandshakePayload`.
    #[error("malformed identity payload")]
    MalformedPayload,
    /// The identity key is not a valid Ed25519 public key.
    #[error("invalid identity key")]
    BadIdentityKey,
    /// The signature over the Noise static key does not verify.
    #[error("identity signature does not verify")]
    BadSignature,
    /// The dialled peer proved a different identity than the address dialled.
    #[error("expected peer {expected}, got {got}")]
    WrongPeer {
        /// The address dialled.
        expected: Address,
        /// The address proven.
        got: Address,
    },
    /// The handshake did not finish within the deadline.
    #[error("handshake timed out")]
    Timeout,
}

impl HandshakeError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::Io(_) => "io",
            HandshakeError::Closed => "closed",
            HandshakeError::Noise(_) => "noise",
            HandshakeError::UnexpectedPayload => "unexpected_payload",
            HandshakeError::MalformedPayload => "malformed_payload",
            HandshakeError::BadIdentityKey => "bad_identity_key",
            HandshakeError::BadSignature => "bad_signature",
            HandshakeError::WrongPeer { .. } => "wrong_peer",
            HandshakeError::Timeout => "timeout",
        }
    }
}

/// This node's handshake material: a Noise static key pair (fresh per transport) and the
/// encoded, signed identity payload, computed once.
pub struct LocalKeys {
    static_private: Vec<u8>,
    /// The Noise static public key.
    pub static_public: [u8; 32],
    /// The encoded `HandshakePayload`.
    pub payload: Vec<u8>,
}

impl LocalKeys {
    /// Generates a Noise static key pair and signs it with `identity`.
    pub fn generate(identity: &Identity) -> Result<Self, snow::Error> {
        let kp = snow::Builder::new(params()).generate_keypair()?;
        let mut static_public = [0u8; 32];
        static_public.copy_from_slice(&kp.public);
        Ok(Self {
            payload: signed_payload(identity, &static_public),
            static_private: kp.private,
            static_public,
        })
    }
}

fn params() -> snow::params::NoiseParams {
    // A constant, valid protocol name always parses.
    NOISE_PARAMS.parse().expect("valid noise params")
}

/// The encoded `HandshakePayload` proving that `identity` owns the Noise key `static_public`.
pub fn signed_payload(identity: &Identity, static_public: &[u8; 32]) -> Vec<u8> {
    let mut msg = SIGNATURE_PREFIX.to_vec();
    msg.extend_from_slice(static_public);
    pb::HandshakePayload {
        identity_key: identity.public_key().to_vec().into(),
        signature: identity.sign(&msg).to_vec().into(),
    }
    .encode_to_vec()
}

/// Checks a `HandshakePayload` against the remote Noise static key; returns the proven
/// Ed25519 public key.
pub fn verify_payload(payload: &[u8], remote_static: &[u8]) -> Result<[u8; 32], HandshakeError> {
    let p = pb::HandshakePayload::decode(payload).map_err(|_| HandshakeError::MalformedPayload)?;
    let key: [u8; 32] = p
        .identity_key
        .as_ref()
        .try_into()
        .map_err(|_| HandshakeError::BadIdentityKey)?;
    let sig: [u8; 64] = p
        .signature
        .as_ref()
        .try_into()
        .map_err(|_| HandshakeError::BadSignature)?;
    let vk = VerifyingKey::from_bytes(&key).map_err(|_| HandshakeError::BadIdentityKey)?;
    let mut msg = SIGNATURE_PREFIX.to_vec();
    msg.extend_from_slice(remote_static);
    vk.verify_strict(&msg, &Signature::from_bytes(&sig))
        .map_err(|_| HandshakeError::BadSignature)?;
    Ok(key)
}

/// A finished handshake: the session cipher and the remote's proven identity.
pub struct Established {
    /// Shared by the connection's reader and writer; each keeps its own nonce.
    pub cipher: Arc<Session>,
    /// The remote's Ed25519 public key.
    pub remote_key: [u8; 32],
    /// The remote's address.
    pub remote: Address,
}

/// Wraps a read half in the Noise-message codec used for the whole connection.
pub fn noise_reader<R: AsyncRead>(read: R) -> NoiseReader<R> {
    FramedRead::with_capacity(read, noise_codec(), 4096)
}

async fn recv<R: AsyncRead + Unpin>(
    reader: &mut NoiseReader<R>,
) -> Result<bytes::BytesMut, HandshakeError> {
    match reader.next().await {
        Some(r) => Ok(r?),
        None => Err(HandshakeError::Closed),
    }
}

async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    hs: &mut snow::HandshakeState,
    payload: &[u8],
) -> Result<(), HandshakeError> {
    // The longest XX message: an ephemeral and an encrypted static key, then the payload and
    // its tag. Sized to fit rather than to the Noise maximum, which is 64 KiB to zero per message.
    let mut buf = vec![0u8; (2 + 32 + 48 + payload.len() + 16).min(2 + MAX_NOISE_MESSAGE)];
    let n = hs.write_message(payload, &mut buf[2..])?;
    // n <= MAX_NOISE_MESSAGE (snow enforces it), so it fits the u16 prefix.
    buf[..2].copy_from_slice(&(n as u16).to_be_bytes());
    writer.write_all(&buf[..2 + n]).await?;
    Ok(())
}

fn finish(hs: snow::HandshakeState, remote_payload: &[u8]) -> Result<Established, HandshakeError> {
    let remote_static = hs
        .get_remote_static()
        .ok_or(HandshakeError::BadIdentityKey)?;
    let remote_key = verify_payload(remote_payload, remote_static)?;
    Ok(Established {
        cipher: Arc::new(Session::from_handshake(hs)?),
        remote_key,
        remote: Address::from_public_key(&remote_key),
    })
}

/// Runs the initiator side; refuses (before revealing our identity) a responder whose
/// identity is not `expected`.
pub async fn initiate<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    keys: &LocalKeys,
    reader: &mut NoiseReader<R>,
    writer: &mut W,
    expected: Address,
) -> Result<Established, HandshakeError> {
    let mut hs = snow::Builder::new(params())
        .local_private_key(&keys.static_private)?
        .build_initiator()?;
    send(writer, &mut hs, &[]).await?;
    let m2 = recv(reader).await?;
    // A plaintext is never longer than its message.
    let mut scratch = vec![0u8; m2.len()];
    let n = hs.read_message(&m2, &mut scratch)?;
    let remote_static = hs
        .get_remote_static()
        .ok_or(HandshakeError::BadIdentityKey)?;
    let remote_key = verify_payload(&scratch[..n], remote_static)?;
    let got = Address::from_public_key(&remote_key);
    if got != expected {
        return Err(HandshakeError::WrongPeer { expected, got });
    }
    send(writer, &mut hs, &keys.payload).await?;
    finish(hs, &scratch[..n])
}

/// Runs the responder side; the caller decides whether the proven identity is welcome.
pub async fn respond<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    keys: &LocalKeys,
    reader: &mut NoiseReader<R>,
    writer: &mut W,
) -> Result<Established, HandshakeError> {
    let mut hs = snow::Builder::new(params())
        .local_private_key(&keys.static_private)?
        .build_responder()?;
    let m1 = recv(reader).await?;
    // A plaintext is never longer than its message.
    let mut scratch = vec![0u8; m1.len()];
    if hs.read_message(&m1, &mut scratch)? != 0 {
        return Err(HandshakeError::UnexpectedPayload);
    }
    send(writer, &mut hs, &keys.payload).await?;
    let m3 = recv(reader).await?;
    scratch.resize(m3.len(), 0);
    let n = hs.read_message(&m3, &mut scratch)?;
    finish(hs, &scratch[..n])
}
