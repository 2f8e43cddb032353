//! Graceful shutdown: stop accepting, drain every queue up to a deadline, say Goodbye, and
//! return once every task has ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Inner;
use crate::transport::events::CloseReason;
use crate::transport::{lock, RequestError};

/// What a shutdown achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every queue was sent before the deadline.
    pub drained: bool,
    /// Messages dropped: still queued at the deadline, or cut off mid-write when it passed.
    pub dropped: usize,
    /// Connections open when shutdown began.
    pub connections: usize,
    /// Tasks had to be aborted at the deadline.
    pub forced: bool,
    /// How long shutdown took.
    pub elapsed: Duration,
}

impl Inner {
    pub(crate) async fn shutdown(self: &Arc<Self>, deadline: Duration) -> ShutdownReport {
        let start = Instant::now();
        let first = {
            let mut st = lock(&self.state);
            let first = !st.shutting_down;
            st.shutting_down = true;
            first
        };
        let tracker = &self.shared.tracker;
        if !first {
            tracker.wait().await;
            return ShutdownReport {
                drained: true,
                ..ShutdownReport::default()
            };
        }
        let lost_before = self.shared.lost.load(Ordering::SeqCst);
        self.shared.events.close();
        let mut connections = 0;
        for p in lock(&self.state).peers.values() {
            let q = p.lock();
            connections += q.conns;
            if let Some(c) = &q.current {
                c.close_with(CloseReason::Shutdown);
            }
        }
        tracker.close();
        let forced = tokio::time::timeout(deadline, tracker.wait())
            .await
            .is_err();
        if forced {
            self.shared.kill.cancel();
            tracker.wait().await;
        }
        let mut dropped = 0;
        for p in lock(&self.state).peers.values() {
            let mut q = p.lock();
            dropped += q.queue.clear();
            q.fail_pending(RequestError::Shutdown);
        }
        for _ in 0..dropped {
            self.metrics().drop_msg("shutdown");
        }
        dropped += (self.shared.lost.load(Ordering::SeqCst) - lost_before) as usize;
        // Every task has ended, so this was the last sender: the event stream ends.
        self.shared.events.finish();
        ShutdownReport {
            drained: dropped == 0 && !forced,
            dropped,
            connections,
            forced,
            elapsed: start.elapsed(),
        }
    }
}
