//! Fuzz targets for raintree (run with `fuzz/run` or `cargo +nightly fuzz run <target>`).
//!
//! Each target's logic lives here, not in `fuzz_targets/`, so the seed generator
//! (`examples/gen_corpus.rs`) and the stable-toolchain tests below run exactly the code the
//! fuzzer runs.

// Struct literals end in `..Default::default()` on purpose: fields the engine or the wire gain
// in parallel work keep their defaults instead of breaking the targets.
#![allow(clippy::needless_update)]

pub mod engine;
pub mod frame_opener;
pub mod handshake_payload;
pub mod input;
pub mod msg;
pub mod seeds;
pub mod wire_decode;

/// A target's entry point: one input.
pub type Target = fn(&[u8]);

/// The targets, by name, as `fuzz/run` and the corpus directories name them.
pub const TARGETS: [(&str, Target); 4] = [
    ("wire_decode", wire_decode::run),
    ("frame_opener", frame_opener::run),
    ("handshake_payload", handshake_payload::run),
    ("engine", engine::run),
];
