//! The engine's committed seeds and reproducers under `RAINTREE_FUZZ_STRICT=1`: no id is
//! delivered twice within `seen_ttl`, eviction or not (issue 9).

#[test]
fn engine_inputs_pass_in_strict_mode() {
    std::env::set_var("RAINTREE_FUZZ_STRICT", "1");
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["corpus/engine", "repro/engine"] {
        let mut files: Vec<_> = std::fs::read_dir(base.join(dir))
            .expect("committed inputs")
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        for p in files {
            eprintln!("{}", p.display());
            raintree_fuzz::engine::run(&std::fs::read(&p).expect("readable input"));
        }
    }
}
