//! `check_invariants` holds through a broadcast with failures, and fails when bookkeeping is
//! broken on purpose.

use super::*;

/// Node 0 of 9 broadcasts with node 4 dead: ACKs, a re-split and owed messages pending.
fn busy_net() -> Net {
    broadcast_with_dead(9, exact(), &[4], b"payload")
}

#[test]
fn invariants_hold_through_failures_and_expiry() {
    let mut net = busy_net();
    for e in &net.engines {
        e.check_invariants().unwrap();
    }
    // Node 3 delegates to dead node 4 and keeps the payload for its re-split.
    assert!(net.engines[3].held_bytes() > 0);
    net.run_timers(Duration::from_secs(3_600));
    for e in &net.engines {
        e.check_invariants().unwrap();
        assert_eq!(e.held_bytes(), 0);
    }
}

#[test]
fn a_held_byte_count_off_by_one_is_caught() {
    let mut net = busy_net();
    net.engines[0].core.budget.skew_for_test(1);
    let err = net.engines[0].check_invariants().unwrap_err();
    assert!(err.0.contains("held bytes"), "{err}");
}

#[test]
fn an_awaited_answer_without_a_timer_is_caught() {
    let mut net = busy_net();
    let e = &mut net.engines[3];
    e.core.timers.clear_for_test();
    let err = e.check_invariants().unwrap_err();
    assert!(err.0.contains("timer"), "{err}");
}
