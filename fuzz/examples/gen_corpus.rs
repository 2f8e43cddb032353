//! Writes the seed corpora to `fuzz/corpus/<target>/` and the strict-mode reproducers to
//! `fuzz/repro/<target>/`: `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (dir, seeds) in [
        ("corpus", raintree_fuzz::seeds::all()),
        ("repro", raintree_fuzz::seeds::strict_repros()),
    ] {
        for (target, name, bytes) in seeds {
            let d = root.join(dir).join(target);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join(name), bytes)?;
        }
    }
    Ok(())
}
