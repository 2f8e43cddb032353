//! The listener: binding, accepting under the inbound limit, and the responder side of the
//! handshake up to registering the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Inner, Slot};
use crate::net::{Listener, Net, Stream};
use crate::transport::events::{Event, RefuseReason};
use crate::transport::handshake::{self, HandshakeError};
use crate::transport::{lock, TransportError};

/// Binds the listener at `addr`.
pub(super) async fn bind(net: Net, addr: SocketAddr) -> Result<Listener, TransportError> {
    Listener::bind(net, addr)
        .await
        .map_err(|source| TransportError::Bind { addr, source })
}

impl Inner {
    pub(super) async fn accept_loop(self: Arc<Self>, listener: Listener) {
        let closing = self.shared.events.closing.clone();
        loop {
            let accepted = tokio::select! {
                _ = closing.cancelled() => break,
                r = listener.accept() => r,
            };
            let (sock, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = closing.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                    }
                }
            };
            // Before the slot and any crypto: a refused socket costs one accept and a close.
            if !lock(&self.limiter).allow(remote.ip(), tokio::time::Instant::now()) {
                drop(sock);
                self.refused(remote, RefuseReason::RateLimited);
                continue;
            }
            let Some(slot) = Slot::inbound(&self) else {
                drop(sock);
                self.refused(remote, RefuseReason::InboundLimit);
                continue;
            };
            self.shared
                .tracker
                .spawn(Arc::clone(&self).inbound(sock, remote, slot));
        }
    }

    fn refused(&self, remote: SocketAddr, reason: RefuseReason) {
        self.metrics().refuse(reason.label());
        tracing::debug!(%remote, ?reason, "inbound connection refused");
        // Never let a flood of refusals wait on the application.
        self.shared
            .events
            .try_emit(Event::Refused { remote, reason });
    }

    async fn inbound(self: Arc<Self>, sock: Stream, remote: SocketAddr, slot: Slot) {
        let _ = sock.set_nodelay(true);
        let (r, mut w) = sock.into_split();
        let mut reader = handshake::noise_reader(r);
        let res = tokio::select! {
            r = tokio::time::timeout(
                self.config.handshake_timeout,
                handshake::respond(&self.keys, &mut reader, &mut w),
            ) => r.unwrap_or(Err(HandshakeError::Timeout)),
            // Shutdown stops accepting, half-done handshakes included.
            _ = self.shared.events.closing.cancelled() => return,
        };
        let est = match res {
            Ok(est) => est,
            Err(e) => {
                self.metrics().handshake_failed(e.label());
                let reason = match e {
                    HandshakeError::Timeout => RefuseReason::HandshakeTimeout,
                    _ => RefuseReason::HandshakeFailed(e.label()),
                };
                tracing::debug!(%remote, error = %e, "inbound handshake failed");
                return self.refused(remote, reason);
            }
        };
        if est.remote == self.address {
            return self.refused(remote, RefuseReason::SelfConnection);
        }
        if self.is_banned(&est.remote) {
            return self.refused(remote, RefuseReason::Banned(est.remote));
        }
        let peer = {
            let mut st = lock(&self.state);
            let known = self.listen_addr(&est.remote).is_some();
            (known || self.config.open).then(|| self.peer_entry(&mut st, est.remote))
        };
        match peer {
            Some(p) => self.register(p, est, reader, w, true, slot).await,
            None => self.refused(remote, RefuseReason::UnknownPeer(est.remote)),
        }
    }
}
