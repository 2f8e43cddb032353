use super::*;

fn sim(nodes: usize, f: impl FnOnce(&mut SimConfig)) -> Report {
    let mut c = SimConfig {
        nodes,
        ..SimConfig::default()
    };
    f(&mut c);
    run(&c).unwrap()
}

fn exact(c: &mut SimConfig) {
    c.protocol.strategy = Strategy::Exact;
}

/// The reference strategy (SPEC 2), which is no longer the default.
fn reference(c: &mut SimConfig) {
    c.protocol.strategy = Strategy::Reference;
}

#[test]
fn same_seed_same_report_byte_for_byte() {
    let go = |seed| {
        let r = sim(500, |c| {
            c.seed = seed;
            c.loss_percent = 5.0;
            c.dead_percent = 10.0;
            c.protocol.cleanup = true;
            c.per_node = true;
        });
        serde_json::to_string(&r).unwrap()
    };
    assert_eq!(go(7), go(7));
    assert_ne!(go(7), go(8));
}

#[test]
fn forward_duplicates_reproduces_the_spec_table() {
    let r = sim(12, |c| {
        reference(c);
        c.protocol.acks = false;
        c.protocol.forward_duplicates = true;
        c.per_node = true;
    });
    let rows: Vec<(u32, u32)> = r
        .per_node
        .unwrap()
        .iter()
        .map(|n| (n.reads, n.writes))
        .collect();
    #[rustfmt::skip]
    let want = vec![(1, 6), (3, 2), (2, 2), (2, 0), (2, 4), (3, 2), (2, 2), (2, 0),
                    (2, 4), (3, 2), (2, 2), (2, 0)];
    assert_eq!(rows, want);
    assert_eq!(r.sends, 26);
}

#[test]
fn exact_tree_is_minimal_without_failures() {
    for n in [1, 2, 5, 12, 100, 728, 1000] {
        let r = sim(n, exact);
        assert_eq!(r.covered, n, "n={n}");
        assert_eq!(r.sends as usize, n - 1, "n={n}");
        assert_eq!(r.engine.acks_sent as usize, n - 1, "n={n}");
        assert_eq!(r.rmr, 0.0);
        assert!(r.max_hops <= crate::tree::max_level(n as u64), "n={n}");
        assert!(r.time_to_full_ms.is_some());
    }
}

#[test]
fn reference_tree_leaves_gaps_off_powers_of_three() {
    let full = sim(729, reference);
    assert_eq!(full.covered, 729);
    let gappy = sim(1000, reference);
    assert!(gappy.covered < 1000);
    assert_eq!(gappy.time_to_full_ms, None);
}

#[test]
fn dead_nodes_with_cleanup_reach_every_live_node() {
    let without = sim(1000, |c| {
        reference(c);
        c.dead_percent = 10.0;
    });
    assert!(without.covered < without.live);
    assert_eq!(without.engine.igyw_sent, 0);
    for strategy in [Strategy::Reference, Strategy::Exact] {
        let r = sim(1000, |c| {
            c.protocol.strategy = strategy;
            c.protocol.cleanup = true;
            c.dead_percent = 10.0;
        });
        assert_eq!(r.dead, 100);
        assert_eq!(r.covered, r.live, "{strategy}");
        assert!(r.engine.igyw_sent > 0);
        assert!(r.time_to_full_ms.is_some());
    }
}

#[test]
fn acks_and_redelegation_recover_most_of_a_dead_subtree() {
    let without = sim(1000, |c| {
        exact(c);
        c.protocol.acks = false;
        c.dead_percent = 10.0;
    });
    let with = sim(1000, |c| {
        exact(c);
        c.dead_percent = 10.0;
    });
    assert!(with.covered > without.covered);
    assert!(with.engine.resends > 0 && with.engine.ack_timeouts > 0);
}

#[test]
fn redundancy_both_fills_gaps_of_the_reference_tree() {
    let r = sim(1000, |c| c.protocol.redundancy = Redundancy::Both);
    assert_eq!(r.covered, 1000);
    assert!(r.engine.redundancy_sends > 0 && r.engine.redundancy_sends <= 2000);
}

#[test]
fn loss_with_acks_resends() {
    let r = sim(2000, |c| {
        exact(c);
        c.loss_percent = 5.0;
    });
    assert!(r.engine.resends > 0);
    assert!(r.covered > 1800);
}

#[test]
fn partial_views_run_and_have_a_limit() {
    let r = sim(300, |c| {
        c.partial_view_percent = 50.0;
        c.protocol.redundancy = Redundancy::Both;
        c.protocol.cleanup = true;
    });
    assert!(r.covered > 250, "{}", r.covered);
    let mut c = SimConfig {
        nodes: 100_000,
        partial_view_percent: 50.0,
        ..SimConfig::default()
    };
    assert!(matches!(run(&c), Err(SimError::PartialViewTooLarge { .. })));
    c.partial_view_percent = 101.0;
    assert!(matches!(run(&c), Err(SimError::BadPercent { .. })));
    c.partial_view_percent = 100.0;
    c.originator = 100_000;
    assert!(matches!(run(&c), Err(SimError::BadOriginator { .. })));
}

#[test]
fn the_originator_never_dies() {
    let r = sim(50, |c| {
        c.dead_percent = 100.0;
        c.originator = 17;
    });
    assert_eq!((r.live, r.covered, r.dead), (1, 1, 49));
    assert_eq!(r.time_to_full_ms, Some(0.0));
}

#[test]
fn broadcasts_aggregate() {
    let one = sim(81, exact);
    let three = sim(81, |c| {
        exact(c);
        c.broadcasts = 3;
    });
    assert_eq!(three.sends, 3 * one.sends);
    assert_eq!(three.covered, 81);
    assert_eq!(three.covered_mean, 81.0);
    assert_eq!(three.engine.broadcasts, 3);
}

fn failing(c: &mut SimConfig, dead: f64, failure: Failure) {
    exact(c);
    c.dead_percent = dead;
    c.failure = failure;
    c.broadcasts = 4;
}

#[test]
fn exact_covers_every_live_node_and_later_broadcasts_skip_the_dead() {
    let clean = sim(600, |c| failing(c, 0.0, Failure::Silent));
    let base = clean.per_broadcast[1].time_to_full_ms.unwrap();
    for dead in [10.0, 30.0] {
        let r = sim(600, |c| failing(c, dead, Failure::Silent));
        for b in &r.per_broadcast {
            assert_eq!(b.stable_covered, b.stable, "dead {dead}%");
        }
        // The first broadcast learns who is dead; the others pass them over, no deadline paid.
        let first_timeouts = r.engine.ack_timeouts;
        assert!(r.engine.skips > 0 && r.engine.probes == r.engine.skips);
        for b in &r.per_broadcast[1..] {
            assert!(
                b.time_to_full_ms.unwrap() <= 2.0 * base,
                "dead {dead}%: {b:?}"
            );
        }
        assert!(
            first_timeouts <= r.dead as u64,
            "dead {dead}%: timeouts only once"
        );
    }
}

#[test]
fn refused_failures_cost_one_link_latency_not_a_deadline() {
    let clean = sim(600, |c| failing(c, 0.0, Failure::Refused));
    let r = sim(600, |c| failing(c, 30.0, Failure::Refused));
    assert_eq!(r.engine.ack_timeouts, 0);
    assert!(r.engine.unreachable > 0 && r.engine.resplits > 0);
    for (b, c) in r.per_broadcast.iter().zip(&clean.per_broadcast) {
        assert_eq!(b.stable_covered, b.stable);
        assert!(b.time_to_full_ms.unwrap() <= 2.0 * c.time_to_full_ms.unwrap());
    }
}

#[test]
fn churn_reaches_every_stable_node_and_recovered_nodes_are_used_again() {
    let r = sim(400, |c| {
        exact(c);
        c.churn_percent = 10.0;
        c.churn_period = Duration::from_secs(1);
        c.interval = Duration::from_millis(100);
        c.broadcasts = 30;
    });
    assert_eq!(r.per_broadcast.len(), 30);
    for b in &r.per_broadcast {
        assert_eq!(b.stable_covered, b.stable, "{b:?}");
        assert!(b.stable < 400);
    }
    // Nodes come back: probes find them, so later broadcasts send them tree copies again.
    assert!(r.engine.probes > 0);
    assert!(r.engine.igyw_sent > r.engine.probes / 2);
}

#[test]
fn cleanup_fills_long_gaps_in_bounded_time() {
    // Without ACKs a dead reference node loses its whole subtree: long runs of misses that a
    // one-node-at-a-time chain would walk for seconds per hundred nodes.
    let r = sim(2000, |c| {
        reference(c);
        c.protocol.acks = false;
        c.protocol.cleanup = true;
        c.dead_percent = 30.0;
    });
    assert_eq!(r.covered, r.live);
    let delay = c_ms(&SimConfig::default().protocol.cleanup_delay);
    // Delay, then windows doubling: far fewer than one round trip per missed node.
    let t = r.time_to_full_ms.unwrap();
    assert!(t < delay + 3000.0, "time to full {t} ms");
}

fn c_ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn churn_needs_an_interval() {
    let mut c = SimConfig {
        nodes: 10,
        churn_percent: 10.0,
        ..SimConfig::default()
    };
    assert_eq!(run(&c).unwrap_err(), SimError::ChurnNeedsTime);
    c.interval = Duration::from_millis(10);
    assert!(run(&c).is_ok());
}

/// Exact tree, ACKs and clean-up on, 10% hostile nodes of kind `h` among 600.
fn hostile_run(h: Hostile, seed: u64, f: impl FnOnce(&mut SimConfig)) -> Report {
    sim(600, |c| {
        exact(c);
        c.protocol.cleanup = true;
        c.seed = seed;
        c.hostile_percent = 10.0;
        c.hostile = h;
        f(c);
    })
}

#[test]
fn black_holes_starve_no_honest_node() {
    for seed in 1..=4 {
        let r = hostile_run(Hostile::Blackhole, seed, |_| {});
        assert_eq!(r.honest, 540);
        assert_eq!(r.honest_covered, r.honest, "seed {seed}");
        assert!(
            r.sends as f64 <= 2.5 * 599.0,
            "seed {seed}: {} sends",
            r.sends
        );
    }
    // The defence is what does it: a chain that stops at the first HAVE and trusts window
    // HAVEs leaves the black holes' subtrees uncovered.
    let r = hostile_run(Hostile::Blackhole, 1, |c| {
        c.protocol.igyw_have_limit = 1;
        c.protocol.trust_window_have = true;
    });
    assert!(
        r.honest_covered < r.honest,
        "{} of {}",
        r.honest_covered,
        r.honest
    );
}

#[test]
fn forged_copies_are_never_delivered_when_nodes_verify() {
    let r = hostile_run(Hostile::Forge, 1, |c| c.signatures = true);
    assert_eq!(r.forged_deliveries, 0);
    assert_eq!(r.honest_covered, r.honest);
    // Without signatures the same forgeries are delivered: the counter sees them.
    let r = hostile_run(Hostile::Forge, 1, |_| {});
    assert!(r.forged_deliveries > 0);
}

#[test]
fn inflated_ranges_cost_nothing() {
    let clean = hostile_run(Hostile::Inflate, 1, |c| c.hostile_percent = 0.0);
    for seed in 1..=3 {
        let r = hostile_run(Hostile::Inflate, seed, |_| {});
        assert_eq!(r.honest_covered, r.honest, "seed {seed}");
        assert!(
            r.sends as f64 <= 1.1 * clean.sends as f64,
            "seed {seed}: {} sends against {}",
            r.sends,
            clean.sends
        );
    }
}

#[test]
fn flooding_nodes_do_not_stop_the_broadcast() {
    let r = hostile_run(Hostile::Flood, 1, |c| c.signatures = true);
    assert_eq!(r.honest_covered, r.honest);
    assert!(
        r.engine.duplicates < 600,
        "flood ids are fresh, not duplicates"
    );
}

#[test]
fn json_has_every_engine_counter_once_beside_the_figures() {
    let r = run(&SimConfig {
        nodes: 30,
        broadcasts: 2,
        ..SimConfig::default()
    })
    .unwrap();
    let json = serde_json::to_string(&r).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // A key written twice (a counter named like a figure) parses as one, so it re-encodes shorter.
    assert_eq!(v.to_string().len(), json.len(), "{json}");
    for f in Stats::FIELDS {
        assert_eq!(v[f.name()].as_u64(), Some(f.get(&r.engine)), "{}", f.name());
    }
    assert_eq!(v["broadcasts"], 2);
}
