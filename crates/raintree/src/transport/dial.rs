//! Dialling a peer and the doubling back-off after failed dials.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::events::Event;
use super::handshake::{self, HandshakeError};
use super::registry::{Inner, Peer, Slot};
use crate::net::Stream;

/// The wait before the next dial after `failures` failed dials in a row: `base` doubling per
/// failure, at most `max`.
pub(crate) fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    base.saturating_mul(1 << failures.min(16).saturating_sub(1))
        .min(max)
}

impl Inner {
    /// Dials `addr` expecting `peer`'s identity, after the backoff if one is pending.
    pub(crate) async fn dial(
        self: Arc<Self>,
        peer: Arc<Peer>,
        addr: SocketAddr,
        not_before: Option<Instant>,
        slot: Slot,
    ) {
        if let Some(at) = not_before {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                // A shutdown does not wait out a backoff: the queued messages are dropped.
                _ = self.shared.events.closing.cancelled() => return self.dial_failed(&peer, "shutdown"),
            }
        }
        let attempt = async {
            let sock = Stream::connect(self.config.net, addr).await?;
            let _ = sock.set_nodelay(true);
            let (r, mut w) = sock.into_split();
            let mut reader = handshake::noise_reader(r);
            let est = handshake::initiate(&self.keys, &mut reader, &mut w, peer.address).await?;
            Ok::<_, HandshakeError>((reader, w, est))
        };
        let res = tokio::select! {
            r = tokio::time::timeout(self.config.handshake_timeout, attempt) => {
                r.unwrap_or(Err(HandshakeError::Timeout))
            }
            _ = self.shared.kill.cancelled() => return self.dial_failed(&peer, "shutdown"),
        };
        match res {
            Ok((reader, w, est)) => {
                self.register(peer, est, reader, w, false, slot).await;
            }
            Err(e) => {
                tracing::debug!(peer = %peer.address, %addr, error = %e, "dial failed");
                self.metrics().handshake_failed(e.label());
                self.dial_failed(&peer, e.label());
                let reason = format!("dial failed: {e}");
                self.shared
                    .events
                    .emit(Event::ConnectionDown {
                        peer: peer.address,
                        reason,
                        lost: true,
                    })
                    .await;
            }
        }
    }

    fn dial_failed(&self, peer: &Peer, why: &'static str) {
        let mut q = peer.lock();
        q.dialing = false;
        q.failures = q.failures.saturating_add(1);
        let wait = backoff(
            self.config.dial_backoff,
            self.config.max_dial_backoff,
            q.failures,
        );
        q.next_dial = Some(Instant::now() + wait);
        if q.current.is_none() {
            // Nobody can carry them: a later send redials after the backoff.
            let n = q.queue.clear();
            for _ in 0..n {
                self.metrics().drop_msg("dial_failed");
            }
            q.fail_pending(self.closed_error());
        }
        tracing::trace!(peer = %peer.address, why, "dial slot released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_and_stops_at_max() {
        let ms = Duration::from_millis;
        let waits: Vec<_> = (1..=9).map(|f| backoff(ms(250), ms(30_000), f)).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000].map(ms)
        );
        // No overflow however many failures pile up.
        assert_eq!(backoff(ms(250), ms(30_000), u32::MAX), ms(30_000));
        assert_eq!(backoff(Duration::MAX, Duration::MAX, 40), Duration::MAX);
    }
}
