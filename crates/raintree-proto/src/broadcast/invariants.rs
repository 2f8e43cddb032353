//! What must hold between inputs, checked by [`Engine::check_invariants`]: after every input
//! in the engine tests, the debug builds of everything that steps an engine through
//! [`crate::drive`] (the simulator, the node tests) and the fuzzer.

use std::collections::HashSet;

use rand::RngCore;

use super::engine::Engine;
use super::ledger::Awaiting;
use super::liveness::Awaited;
use super::timers::TimerKind;

/// A broken invariant: which, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("engine invariant broken: {0}")]
pub struct InvariantViolation(pub String);

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), InvariantViolation> {
    if ok {
        Ok(())
    } else {
        Err(InvariantViolation(what()))
    }
}

impl<R: RngCore> Engine<R> {
    /// Checks the engine's internal bookkeeping: held bytes equal what the entries hold, every
    /// awaited answer has a live timer and a liveness index entry, every entry has its expiry
    /// timer, no id is both an entry and a tombstone, and the seen-set's shares add up.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.seen.check()?;
        let timers: HashSet<_> = self
            .core
            .timers
            .iter()
            .map(|t| (t.id, t.entry_seq, t.kind))
            .collect();
        let mut held = 0;
        for (id, e) in self.seen.entries() {
            let (seq, h) = (e.seq(), &e.held);
            held += h.counted();
            ensure(h.counted() == h.due(), || {
                format!(
                    "{id:?} counts {} held bytes, holds {}",
                    h.counted(),
                    h.due()
                )
            })?;
            ensure(h.holds() || h.payload().is_empty(), || {
                format!("{id:?} released its payload but keeps its bytes")
            })?;
            ensure(timers.contains(&(*id, seq, TimerKind::Expire)), || {
                format!("{id:?} has no expiry timer")
            })?;
            ensure(!h.shed() || !e.busy(), || {
                format!("{id:?} was shed but has duties")
            })?;
            for p in e.ledger.iter() {
                let kind = match p.what {
                    Awaiting::Ack { .. } => TimerKind::Ack(p.token),
                    Awaiting::Offer { .. } => TimerKind::IgywWait(p.token),
                };
                ensure(timers.contains(&(*id, seq, kind)), || {
                    format!("{id:?} awaits {:?} from {} with no timer", p.what, p.to)
                })?;
                let a = Awaited {
                    id: *id,
                    entry_seq: seq,
                    token: p.token,
                };
                ensure(self.core.live.is_awaited(&p.to, &a), || {
                    format!("{id:?} awaits {:?} from {}, not indexed", p.what, p.to)
                })?;
            }
        }
        let total = self.core.budget.held();
        ensure(held == total, || {
            format!("held bytes {total}, entries hold {held}")
        })
    }
}
