//! The byte layout every target reads its input in, and the writer that builds seed inputs.
//!
//! Fields are read as raw little-endian bytes from an [`arbitrary::Unstructured`], padded with
//! zeros once the input runs out. That layout is fixed here rather than left to `arbitrary`'s
//! own encoding of integers and enums, so the seed corpora written by [`Writer`] keep meaning
//! the same operations whatever `arbitrary` version builds the targets.

use arbitrary::Unstructured;

/// Reads `N` bytes, zero-padded when the input has fewer left.
pub fn take<const N: usize>(u: &mut Unstructured<'_>) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(u.len());
    if let Ok(b) = u.bytes(n) {
        out[..n].copy_from_slice(b);
    }
    out
}

/// One byte.
pub fn byte(u: &mut Unstructured<'_>) -> u8 {
    take::<1>(u)[0]
}

/// A little-endian u16.
pub fn u16le(u: &mut Unstructured<'_>) -> u16 {
    u16::from_le_bytes(take(u))
}

/// A little-endian u32.
pub fn u32le(u: &mut Unstructured<'_>) -> u32 {
    u32::from_le_bytes(take(u))
}

/// A little-endian u64.
pub fn u64le(u: &mut Unstructured<'_>) -> u64 {
    u64::from_le_bytes(take(u))
}

/// Up to `n` raw bytes (fewer when the input runs out).
pub fn raw<'a>(u: &mut Unstructured<'a>, n: usize) -> &'a [u8] {
    let n = n.min(u.len());
    u.bytes(n).unwrap_or_default()
}

/// Builds inputs in the layout the readers above consume, for seed corpora and tests.
#[derive(Default, Debug, Clone)]
pub struct Writer {
    /// The input built so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one byte.
    pub fn byte(&mut self, b: u8) -> &mut Self {
        self.buf.push(b);
        self
    }

    /// Appends a little-endian u16.
    pub fn u16le(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u32.
    pub fn u32le(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u64.
    pub fn u64le(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// The finished input.
    pub fn finish(&self) -> Vec<u8> {
        self.buf.clone()
    }
}
