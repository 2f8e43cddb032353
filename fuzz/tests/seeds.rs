//! Runs every committed seed and reproducer through its target on the stable toolchain, and
//! checks the committed seeds are what `examples/gen_corpus.rs` writes.

use std::path::Path;

use raintree_fuzz::{seeds, TARGETS};

fn files(dir: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(target);
    let Ok(rd) = std::fs::read_dir(&d) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .map(|e| {
            let p = e.expect("dir entry").path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("readable seed"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_committed_input_passes() {
    for (target, run) in TARGETS {
        let corpus = files("corpus", target);
        assert!(!corpus.is_empty(), "no seeds for {target}");
        for (name, bytes) in corpus.iter().chain(&files("repro", target)) {
            eprintln!("{target}/{name}");
            run(bytes);
        }
    }
}

#[test]
fn generated_seeds_are_committed() {
    for (dir, list) in [("corpus", seeds::all()), ("repro", seeds::strict_repros())] {
        for (target, name, bytes) in list {
            let have = files(dir, target);
            let found = have.iter().find(|(n, _)| *n == name);
            assert_eq!(
                found.map(|(_, b)| b),
                Some(&bytes),
                "{dir}/{target}/{name} differs: run the gen_corpus example"
            );
        }
    }
}

#[test]
fn message_specs_read_back() {
    use raintree_fuzz::input::Writer;
    use raintree_fuzz::msg::{message, Ctx, IdSpec, MsgSpec};
    use raintree_proto::wire::{Message, MessageId};
    use raintree_proto::Address;
    let origins = [Address::from_index(5), Address::from_index(6)];
    let ids = [MessageId {
        origin: origins[0],
        nonce: 77,
    }];
    let ctx = Ctx {
        origins: &origins,
        ids: &ids,
        unit: 1,
        max_len: 1000,
    };
    let mut w = Writer::new();
    MsgSpec::Ack(IdSpec::New(1, 9), 4).write(&mut w);
    MsgSpec::IgywReply(IdSpec::Known(0), true).write(&mut w);
    MsgSpec::Direct(IdSpec::New(0, 1), (3, 0xee)).write(&mut w);
    let data = w.finish();
    let mut u = arbitrary::Unstructured::new(&data);
    let id = |o: usize, nonce| MessageId {
        origin: origins[o],
        nonce,
    };
    assert_eq!(
        message(&mut u, &ctx),
        Message::Ack {
            id: id(1, 9),
            level_or_range: 4
        }
    );
    assert_eq!(
        message(&mut u, &ctx),
        Message::IgywReply {
            id: ids[0],
            want: true
        }
    );
    assert_eq!(
        message(&mut u, &ctx),
        Message::Direct {
            id: id(0, 1),
            payload: vec![0xee; 3].into()
        }
    );
    assert!(u.is_empty());
}

/// Each engine seed reaches the layer it is named after, so the corpus stays meaningful as
/// the engine changes.
#[test]
fn engine_seeds_reach_their_layer() {
    use raintree_proto::broadcast::Stats;
    let sum = |name: &str| -> Stats {
        let (_, _, bytes) = seeds::all()
            .into_iter()
            .find(|(t, n, _)| *t == "engine" && n == name)
            .expect("seed exists");
        let mut total = Stats::default();
        for s in raintree_fuzz::engine::simulate(&bytes) {
            total.add(&s);
        }
        total
    };
    for name in ["reference-acks-deliver-all", "exact-acks-deliver-all"] {
        let s = sum(name);
        assert!(
            s.broadcasts == 2 && s.deliveries >= 4 && s.acks_received > 0,
            "{name}: {s:?}"
        );
    }
    let s = sum("exact-lost-copies-resend");
    assert!(s.ack_timeouts > 0 && s.resends > 0, "{s:?}");
    let s = sum("reference-timeouts-resend");
    assert!(s.ack_timeouts > 0 && s.resends > 0, "{s:?}");
    let s = sum("redundancy-both-cleanup");
    assert!(s.redundancy_sends > 0 && s.igyw_sent > 0, "{s:?}");
    let s = sum("cleanup-igyw-replies");
    assert!(s.igyw_want > 0 && s.cleanup_sends > 0, "{s:?}");
    let s = sum("capacity-one-eviction");
    // One entry and one tombstone: the third new id is refused, never a second delivery.
    assert!(
        s.evicted > 0 && s.deliveries >= 2 && s.seen_full > 0,
        "{s:?}"
    );
    let s = sum("flood-share");
    assert!(s.flood > 0 && s.deliveries >= 3, "{s:?}");
    let s = sum("unreachable-redelegates");
    assert!(
        s.unreachable > 0 && s.suspicions > 0 && s.resplits > 0,
        "{s:?}"
    );
    let s = sum("every-rejected-kind");
    // A strategy mismatch and an oversized payload; the seed's request, response and goodbye
    // cannot reach an engine at all (it takes `BroadcastMessage`).
    assert_eq!(s.rejected, 2, "{s:?}");
    let s = sum("injected-acks-and-range-inflation");
    // Inflated ranges are cut to what a correct sender could give: counted, not re-split.
    assert!(s.duplicates > 0 && s.impossible > 0, "{s:?}");
}

/// The ring livelock reproducer: tombstones now end it with one delivery per id and node.
#[test]
fn ring_livelock_reproducer_now_ends() {
    let (_, _, bytes) = seeds::strict_repros()
        .into_iter()
        .find(|(_, n, _)| n == "ring-livelock-capacity-one")
        .expect("reproducer exists");
    let stats = raintree_fuzz::engine::simulate(&bytes);
    let deliveries: u64 = stats.iter().map(|s| s.deliveries).sum();
    // Two broadcasts over three engines need 4 deliveries; evicted ids used to come back as
    // new and circulate for ever. Tombstones keep them known.
    assert_eq!(deliveries, 4, "{stats:?}");
}
