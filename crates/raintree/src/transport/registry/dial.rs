//! Dialling a peer: claiming the dial, the doubling back-off after failed dials, and the
//! initiator side of the handshake up to registering the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raintree_proto::Address;
use tokio::time::Instant;

use super::{Inner, Peer, PeerState, Slot, State};
use crate::net::Stream;
use crate::transport::events::{CloseReason, Event};
use crate::transport::handshake::{self, HandshakeError};
use crate::transport::SendError;

/// The wait before the next dial after `failures` failed dials in a row: `base` doubling per
/// failure, at most `max`.
fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    base.saturating_mul(1 << failures.min(16).saturating_sub(1))
        .min(max)
}

/// A dial claimed under the state and peer locks, to start once they are released.
pub(super) struct Claimed {
    addr: SocketAddr,
    not_before: Option<Instant>,
}

impl Inner {
    /// Claims a dial to `peer`: counts its outbound slot and marks the peer dialling, so
    /// nobody else starts one. Fails if the book does not say where the peer listens or
    /// `max_outbound` is reached.
    pub(super) fn claim_dial(
        &self,
        st: &mut State,
        q: &mut PeerState,
        peer: Address,
    ) -> Result<Claimed, SendError> {
        let addr = self
            .listen_addr(&peer)
            .ok_or(SendError::UnknownPeer(peer))?;
        if st.outbound >= self.config.max_outbound {
            return Err(SendError::OutboundLimit);
        }
        st.outbound += 1;
        q.dialing = true;
        Ok(Claimed {
            addr,
            not_before: q.next_dial,
        })
    }

    /// Starts a claimed dial (with no lock held: the slot takes the state lock when dropped).
    pub(super) fn start_dial(self: &Arc<Self>, peer: Arc<Peer>, dial: Claimed) {
        let slot = Slot::counted_outbound(self);
        let task = Arc::clone(self).dial(peer, dial, slot);
        self.shared.tracker.spawn(task);
    }

    /// Dials the claimed address expecting `peer`'s identity, after the backoff if one is pending.
    async fn dial(self: Arc<Self>, peer: Arc<Peer>, dial: Claimed, slot: Slot) {
        let Claimed { addr, not_before } = dial;
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
                self.shared
                    .events
                    .emit(Event::ConnectionDown {
                        peer: peer.address,
                        reason: CloseReason::DialFailed(e.to_string()),
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
            q.abandon(self.metrics(), "dial_failed", self.closed_error());
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
