//! One established connection: a reader (this task) and a writer task.
//!
//! The writer pulls from the peer's queue only while this connection is the peer's current
//! one, batches up to `batch_bytes` per socket write, and on close drains (if still current),
//! sends Goodbye and shuts its half down. The reader keeps reading until the peer closes, so
//! whatever the peer wrote before its Goodbye is delivered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use futures::StreamExt;
use raintree_proto::wire::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::framing::{FrameError, Opener, Sealer};
use super::handshake::NoiseReader;
use super::metrics::kind_index;
use super::pool::{ConnRef, Inner, Peer, Slot};
use super::{Event, Responder};

/// Last traffic either way, in milliseconds since the transport's epoch.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Runs a connection until both directions have finished; releases its slot afterwards.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    conn: ConnRef,
    cipher: Arc<snow::StatelessTransportState>,
    reader: NoiseReader,
    writer: OwnedWriteHalf,
    inbound: bool,
    slot: Slot,
) {
    let direction = if inbound { "inbound" } else { "outbound" };
    inner.metrics.conn_open(direction);
    let activity = Arc::new(Activity {
        epoch: inner.epoch,
        last_ms: AtomicU64::new(0),
    });
    activity.touch();
    let abort = inner.kill.child_token();
    let write_done = CancellationToken::new();
    let w = inner.tracker.spawn(write_loop(
        Arc::clone(&inner),
        Arc::clone(&peer),
        conn.clone(),
        Sealer::new(Arc::clone(&cipher), inner.max_frame),
        writer,
        abort.clone(),
        write_done.clone(),
        Arc::clone(&activity),
    ));
    let events = inner.sender();
    inner
        .emit_via(
            &events,
            Event::ConnectionUp {
                peer: peer.address,
                inbound,
            },
        )
        .await;
    let opener = Opener::new(cipher, inner.config.max_payload);
    let ctx = ReadCtx {
        inner: &inner,
        peer: &peer,
        conn: &conn,
        events: &events,
    };
    let (reason, lost) = match read_loop(ctx, opener, reader, &abort, &write_done, &activity).await
    {
        Ok(remote) => match conn.why.get() {
            Some(&local) if local != PEER_GOODBYE => (local.to_string(), local == "write failed"),
            _ => {
                let lost = remote_lost(&remote);
                (remote, lost)
            }
        },
        Err(e) => {
            inner.metrics.frame_error(e.label());
            tracing::warn!(peer = %peer.address, error = %e, "connection closed on bad input");
            abort.cancel();
            (format!("error: {e}"), true)
        }
    };
    inner.detach(&peer, conn.id);
    conn.close_with("closed");
    let _ = w.await;
    inner.conn_ended(&peer, conn.id);
    inner.metrics.conn_closed(direction);
    drop(slot);
    tracing::debug!(peer = %peer.address, %reason, "connection down");
    inner
        .emit_via(
            &events,
            Event::ConnectionDown {
                peer: peer.address,
                reason,
                lost,
            },
        )
        .await;
}

/// The close reason recorded when the peer said Goodbye first.
const PEER_GOODBYE: &str = "peer goodbye";

/// The reader's end, when the peer ended the connection: the peer is gone unless its Goodbye
/// gave an ordinary reason (an idle or duplicate connection closed while it lives on).
fn remote_lost(remote: &str) -> bool {
    match remote.strip_prefix("goodbye: ") {
        Some(why) => !matches!(why, "idle" | "duplicate" | "replaced" | "peer removed"),
        None => remote != "aborted" && remote != "peer did not close",
    }
}

/// What the reader needs besides its stream.
#[derive(Clone, Copy)]
struct ReadCtx<'a> {
    inner: &'a Arc<Inner>,
    peer: &'a Arc<Peer>,
    conn: &'a ConnRef,
    events: &'a Option<tokio::sync::mpsc::Sender<Event>>,
}

async fn read_loop(
    ctx: ReadCtx<'_>,
    mut opener: Opener,
    mut reader: NoiseReader,
    abort: &CancellationToken,
    write_done: &CancellationToken,
    activity: &Activity,
) -> Result<String, FrameError> {
    let ReadCtx {
        inner,
        peer,
        conn,
        events,
    } = ctx;
    let linger = async {
        write_done.cancelled().await;
        tokio::time::sleep(inner.config.linger).await;
    };
    tokio::pin!(linger);
    let mut goodbye = None;
    loop {
        let next = tokio::select! {
            biased;
            _ = abort.cancelled() => return Ok("aborted".into()),
            _ = &mut linger => return Ok(goodbye.unwrap_or_else(|| "peer did not close".into())),
            n = reader.next() => n,
        };
        let buf = match next {
            None if opener.at_boundary() => {
                return Ok(goodbye.unwrap_or_else(|| "closed by peer".into()))
            }
            None => return Err(FrameError::Truncated),
            Some(Err(e)) => return Err(FrameError::from_codec(e)),
            Some(Ok(buf)) => buf,
        };
        activity.touch();
        opener.open(&buf)?;
        while let Some((msg, len)) = opener.next_message()? {
            inner.metrics.received(kind_index(msg.kind()), len);
            match msg {
                Message::Goodbye { reason } => {
                    // The peer sends nothing more here: stop using this connection, answer
                    // with our Goodbye, and read on until it closes.
                    tracing::debug!(peer = %peer.address, %reason, "goodbye received");
                    inner.detach(peer, conn.id);
                    conn.close_with(PEER_GOODBYE);
                    goodbye = Some(format!("goodbye: {reason}"));
                }
                Message::Request { id, payload } => {
                    let responder = Responder {
                        inner: Arc::clone(inner),
                        peer: peer.address,
                        id,
                    };
                    let ev = Event::Request {
                        peer: peer.address,
                        payload,
                        responder,
                    };
                    inner.emit_via(events, ev).await;
                }
                Message::Response { id, payload } => {
                    if !peer.complete(id, payload) {
                        tracing::trace!(peer = %peer.address, id, "response nobody waits for");
                    }
                }
                message => {
                    let ev = Event::Message {
                        peer: peer.address,
                        message,
                    };
                    inner.emit_via(events, ev).await;
                }
            }
        }
    }
}

/// Writes `out` unless the connection is aborted first; false if it was not written.
async fn write_out(w: &mut OwnedWriteHalf, out: &[u8], abort: &CancellationToken) -> bool {
    tokio::select! {
        r = w.write_all(out) => r.is_ok(),
        _ = abort.cancelled() => false,
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    conn: ConnRef,
    mut sealer: Sealer,
    mut w: OwnedWriteHalf,
    abort: CancellationToken,
    write_done: CancellationToken,
    activity: Arc<Activity>,
) {
    let mut msgs: Vec<Message> = Vec::new();
    let mut out = BytesMut::new();
    loop {
        let closing = conn.close.is_cancelled();
        msgs.clear();
        let _ = peer.take(conn.id, inner.config.batch_bytes, &mut msgs);
        if !msgs.is_empty() {
            for m in &msgs {
                match sealer.push(m) {
                    Ok(len) => inner.metrics.sent(kind_index(m.kind()), len),
                    Err(e) => {
                        // Payloads are checked when queued, so only a misconfiguration lands here.
                        tracing::warn!(peer = %peer.address, error = %e, "frame dropped");
                        inner.metrics.drop_msg("frame_too_large");
                    }
                }
            }
            let n = msgs.len();
            msgs.clear();
            if let Err(e) = sealer.seal_into(&mut out) {
                tracing::warn!(peer = %peer.address, error = %e, "encryption failed");
                break_abort(&inner, &peer, &conn, &abort, n);
                return;
            }
            let ok = write_out(&mut w, &out, &abort).await;
            out.clear();
            if out.capacity() > 4 * inner.config.batch_bytes.max(1 << 16) {
                out = BytesMut::new();
            }
            sealer.shrink();
            if !ok {
                break_abort(&inner, &peer, &conn, &abort, n);
                return;
            }
            activity.touch();
            continue;
        }
        if closing {
            break;
        }
        let idle_at = activity.last() + inner.config.idle_timeout;
        tokio::select! {
            biased;
            _ = abort.cancelled() => return,
            _ = conn.close.cancelled() => {}
            _ = conn.wake.notified() => {}
            _ = tokio::time::sleep_until(idle_at) => {
                if activity.last() + inner.config.idle_timeout <= Instant::now() {
                    tracing::debug!(peer = %peer.address, "closing idle connection");
                    inner.detach(&peer, conn.id);
                    conn.close_with("idle");
                }
            }
        }
    }
    let reason = match conn.why.get() {
        _ if inner.closing.is_cancelled() => "shutdown",
        Some(&PEER_GOODBYE) | None => "close",
        Some(why) => why,
    };
    let bye = Message::Goodbye {
        reason: reason.into(),
    };
    if let Ok(len) = sealer.push(&bye) {
        inner.metrics.sent(kind_index(bye.kind()), len);
    }
    if sealer.seal_into(&mut out).is_ok() && write_out(&mut w, &out, &abort).await {
        tokio::select! {
            _ = w.shutdown() => {}
            _ = abort.cancelled() => {}
        }
    }
    write_done.cancel();
}

/// A write failed: the batch is lost (counted) and the connection is torn down.
fn break_abort(
    inner: &Arc<Inner>,
    peer: &Arc<Peer>,
    conn: &ConnRef,
    abort: &CancellationToken,
    lost: usize,
) {
    for _ in 0..lost {
        inner.metrics.drop_msg("connection_lost");
    }
    inner
        .lost
        .fetch_add(lost as u64, std::sync::atomic::Ordering::SeqCst);
    inner.detach(peer, conn.id);
    conn.close_with("write failed");
    abort.cancel();
}
