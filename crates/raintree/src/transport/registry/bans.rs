//! Misbehaviour: scoring offences and cutting a banned peer off.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use raintree_proto::Address;
use tokio::time::Instant;

use super::Inner;
use crate::transport::events::{CloseReason, Event};
use crate::transport::score::{Offence, Verdict};
use crate::transport::{lock, RequestError};

impl Inner {
    /// True while `peer` is banned.
    pub(crate) fn is_banned(&self, peer: &Address) -> bool {
        self.any_ban.load(Ordering::Acquire) && lock(&self.scores).is_banned(peer, Instant::now())
    }

    /// Scores `offence` against `peer`, banning it past the threshold.
    pub(crate) fn penalise(self: &Arc<Self>, peer: Address, offence: Offence) {
        let now = Instant::now();
        let banned = {
            let mut sc = lock(&self.scores);
            let v = sc.penalise(peer, offence, now);
            if v == Verdict::Banned {
                // Under the lock, so no send checks in between sees the ban missing.
                self.any_ban.store(true, Ordering::Release);
            }
            (v == Verdict::Banned).then(|| sc.banned(now))
        };
        self.metrics().penalty(offence.label());
        tracing::debug!(%peer, offence = offence.label(), "peer penalised");
        if let Some(banned) = banned {
            self.ban(peer, banned);
        }
    }

    /// Cuts a freshly banned peer off: its current connection is torn down without Goodbye
    /// (WIRE.md 5.1), its queue dropped and its requests failed.
    fn ban(self: &Arc<Self>, peer: Address, banned: usize) {
        let ban = self.config.score.ban_duration;
        tracing::warn!(%peer, ?ban, "peer banned for misbehaving");
        self.metrics().banned(banned);
        let p = lock(&self.state).peers.get(&peer).cloned();
        if let Some(p) = p {
            let mut q = p.lock();
            q.abandon(self.metrics(), "banned", RequestError::ConnectionClosed);
            if let Some(c) = q.current.take() {
                c.abort_with(CloseReason::Banned);
            }
        }
        self.shared.events.try_emit(Event::Banned { peer, ban });
        // The gauge follows the ban's end even if nothing else happens by then.
        let inner = Arc::clone(self);
        let closing = self.shared.events.closing.clone();
        self.shared.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(ban) => {}
                _ = closing.cancelled() => return,
            }
            let n = lock(&inner.scores).banned(Instant::now());
            inner.metrics().set_banned(n);
        });
    }
}
