//! Requests: send one, wait for its response up to a deadline, end in exactly one outcome.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raintree_proto::wire::Message;
use raintree_proto::Address;
use tokio::sync::oneshot;

use super::Inner;
use crate::transport::{lock, RequestError, SendError};

impl Inner {
    pub(crate) async fn request(
        self: &Arc<Self>,
        peer: Address,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, RequestError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let r = self.enqueue(peer, Message::Request { id, payload }, |q| {
            q.pending.insert(id, tx);
        });
        if let Err(e) = r {
            self.metrics().request_done("send_error");
            return Err(if e == SendError::Shutdown {
                RequestError::Shutdown
            } else {
                RequestError::Send(e)
            });
        }
        // Forgets the waiter however this future ends (timeout, cancellation).
        struct Forget<'a>(&'a Inner, Address, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                if let Some(p) = lock(&self.0.state).peers.get(&self.1) {
                    p.lock().pending.remove(&self.2);
                }
            }
        }
        let _forget = Forget(self, peer, id);
        let out = match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RequestError::ConnectionClosed),
            Err(_) => Err(RequestError::Timeout),
        };
        self.metrics().request_done(match &out {
            Ok(_) => "ok",
            Err(RequestError::Timeout) => "timeout",
            Err(RequestError::ConnectionClosed) => "connection_closed",
            Err(RequestError::Shutdown) => "shutdown",
            Err(RequestError::Send(_)) => "send_error",
        });
        out
    }
}
