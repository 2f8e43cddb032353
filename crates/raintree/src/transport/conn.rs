//! One established connection: a reader (this task) and a writer task.
//!
//! The writer pulls from the peer's queue only while this connection is the peer's current
//! one, batches up to `batch_bytes` per socket write, and on close drains (if still current),
//! sends Goodbye and shuts its half down. The reader keeps reading until the peer closes, so
//! whatever the peer wrote before its Goodbye is delivered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use raintree_proto::wire::Message;
use raintree_proto::Address;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::{CloseReason, Emitter, Event, Responder};
use super::framing::{FrameError, Opener, Sealer, Session};
use super::handshake::NoiseReader;
use super::metrics::{message_kind_index, TransportMetrics};
use super::score::Offence;
use crate::net::{ReadHalf, WriteHalf};

/// A Noise message or write batch up to this size counts as small traffic.
const SMALL_MESSAGE: usize = 16 * 1024;
/// Buffers larger than this are given back when the connection carries small traffic again.
const IDLE_BUFFER: usize = 64 * 1024;
/// What a read buffer starts again with (tokio-util's own initial capacity).
const READ_BUFFER: usize = 8 * 1024;

/// What every connection of one transport shares; owned by the pool, read by connections.
pub(crate) struct Shared {
    pub metrics: TransportMetrics,
    pub events: Emitter,
    /// Deadline passed: every task stops now.
    pub kill: CancellationToken,
    pub tracker: TaskTracker,
    /// Messages taken by a writer whose write failed or was aborted.
    pub lost: AtomicU64,
    /// Instant the transport started, the origin of [`Activity`] timestamps.
    pub epoch: Instant,
    pub max_payload: usize,
    pub max_frame: usize,
    pub batch_bytes: usize,
    pub idle_timeout: Duration,
    pub linger: Duration,
}

/// The few things a connection asks of the pool about its peer: the narrow handle through
/// which `conn` sees the pool (it never sees the pool's state).
pub(crate) trait PoolLink: Send + Sync + 'static {
    /// The peer this connection serves.
    fn peer(&self) -> Address;
    /// Takes up to `budget` bytes of messages (control first) for connection `conn`; false
    /// when `conn` no longer serves the peer.
    fn take(&self, conn: u64, budget: usize, out: &mut Vec<Message>) -> bool;
    /// Completes the pending request `id`; false if nobody waits for it.
    fn complete(&self, id: u64, payload: Bytes) -> bool;
    /// The responder for request `id` from this peer.
    fn responder(&self, id: u64) -> Responder;
    /// Connection `conn` stops serving the peer (no-op if it already had).
    fn detach(&self, conn: u64);
    /// Connection `conn` has ended both ways.
    fn ended(&self, conn: u64);
    /// The peer sent bytes no correct peer sends.
    fn penalise(&self, offence: Offence);
}

/// The connection currently serving a peer, as seen by the pool.
#[derive(Clone)]
pub(crate) struct ConnRef {
    pub id: u64,
    /// Who dialled it: decides simultaneous-dial ties.
    pub dialer: Address,
    /// Wakes this connection's writer.
    pub wake: Arc<Notify>,
    /// Asks the writer to finish: drain if still current, then Goodbye.
    pub close: CancellationToken,
    /// Tears the connection down at once: no drain, no Goodbye (bad input, bans).
    pub abort: CancellationToken,
    /// Why it was closed; the first reason given wins (a peer's Goodbye included).
    pub why: Arc<std::sync::OnceLock<CloseReason>>,
}

impl ConnRef {
    /// A fresh connection reference dialled by `dialer`, aborted along with `kill`.
    pub fn new(id: u64, dialer: Address, kill: &CancellationToken) -> Self {
        Self {
            id,
            dialer,
            wake: Arc::new(Notify::new()),
            close: CancellationToken::new(),
            abort: kill.child_token(),
            why: Default::default(),
        }
    }

    /// Tears this connection down for `why` without a Goodbye.
    pub fn abort_with(&self, why: CloseReason) {
        let _ = self.why.set(why);
        self.abort.cancel();
    }

    /// Closes this connection for `why` (sent in its Goodbye, reported in ConnectionDown).
    pub fn close_with(&self, why: CloseReason) {
        let _ = self.why.set(why);
        self.close.cancel();
    }
}

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
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Runs a connection until both directions have finished. `slot` (the pool's connection
/// slot) is released afterwards, before ConnectionDown is reported.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<S: Send + 'static>(
    shared: Arc<Shared>,
    link: Arc<dyn PoolLink>,
    conn: ConnRef,
    cipher: Arc<Session>,
    reader: NoiseReader<ReadHalf>,
    writer: WriteHalf,
    inbound: bool,
    slot: S,
) {
    let direction = if inbound { "inbound" } else { "outbound" };
    let peer = link.peer();
    shared.metrics.conn_open(direction);
    let activity = Arc::new(Activity {
        epoch: shared.epoch,
        last_ms: AtomicU64::new(0),
    });
    activity.touch();
    let abort = conn.abort.clone();
    let write_done = CancellationToken::new();
    let w = shared.tracker.spawn(write_loop(
        Arc::clone(&shared),
        Arc::clone(&link),
        conn.clone(),
        Sealer::new(Arc::clone(&cipher), shared.max_frame),
        writer,
        abort.clone(),
        write_done.clone(),
        Arc::clone(&activity),
    ));
    let events = shared.events.sender();
    shared
        .events
        .emit_via(&events, Event::ConnectionUp { peer, inbound })
        .await;
    let opener = Opener::new(cipher, shared.max_payload);
    let ctx = ReadCtx {
        shared: &shared,
        link: &link,
        conn: &conn,
        events: &events,
    };
    let reason = match read_loop(ctx, opener, reader, &abort, &write_done, &activity).await {
        // A reason of our own explains the end better than how the reader saw it, unless
        // the peer's Goodbye came first.
        Ok(remote) => match conn.why.get() {
            Some(CloseReason::Goodbye(_)) | None => remote,
            Some(local) => local.clone(),
        },
        Err(e) => {
            shared.metrics.frame_error(e.label());
            tracing::warn!(%peer, error = %e, "connection closed on bad input");
            abort.cancel();
            if let Some(o) = offence(&e) {
                link.penalise(o);
            }
            CloseReason::BadInput(e.to_string())
        }
    };
    link.detach(conn.id);
    conn.close_with(CloseReason::Closed);
    let _ = w.await;
    link.ended(conn.id);
    shared.metrics.conn_closed(direction);
    drop(slot);
    tracing::debug!(%peer, %reason, "connection down");
    shared
        .events
        .emit_via(&events, Event::ConnectionDown { peer, reason })
        .await;
}

/// What a frame error says about the peer; a socket error says nothing.
fn offence(e: &FrameError) -> Option<Offence> {
    match e {
        FrameError::TooLarge => Some(Offence::Oversized),
        FrameError::BadLength(_) | FrameError::Decrypt => Some(Offence::Decrypt),
        FrameError::Decode(_) => Some(Offence::Malformed),
        FrameError::Truncated => Some(Offence::Truncated),
        FrameError::Io(_) => None,
    }
}

/// What the reader needs besides its stream.
#[derive(Clone, Copy)]
struct ReadCtx<'a> {
    shared: &'a Arc<Shared>,
    link: &'a Arc<dyn PoolLink>,
    conn: &'a ConnRef,
    events: &'a Option<tokio::sync::mpsc::Sender<Event>>,
}

async fn read_loop(
    ctx: ReadCtx<'_>,
    mut opener: Opener,
    mut reader: NoiseReader<ReadHalf>,
    abort: &CancellationToken,
    write_done: &CancellationToken,
    activity: &Activity,
) -> Result<CloseReason, FrameError> {
    let ReadCtx {
        shared,
        link,
        conn,
        events,
    } = ctx;
    let peer = link.peer();
    let linger = async {
        write_done.cancelled().await;
        tokio::time::sleep(shared.linger).await;
    };
    tokio::pin!(linger);
    let mut goodbye = None;
    loop {
        let next = tokio::select! {
            biased;
            _ = abort.cancelled() => return Ok(CloseReason::Aborted),
            _ = &mut linger => return Ok(goodbye.unwrap_or(CloseReason::PeerDidNotClose)),
            n = reader.next() => n,
        };
        let buf = match next {
            None if opener.at_boundary() => return Ok(goodbye.unwrap_or(CloseReason::ClosedByPeer)),
            None => return Err(FrameError::Truncated),
            Some(Err(e)) => return Err(FrameError::from_codec(e)),
            Some(Ok(buf)) => buf,
        };
        activity.touch();
        let small = buf.len() <= SMALL_MESSAGE;
        opener.open(buf)?;
        // A burst's read buffer goes back once small messages follow it and it ran empty, so
        // a quiet connection does not keep the largest burst it ever carried.
        let rb = reader.read_buffer_mut();
        if small && rb.is_empty() && rb.capacity() > IDLE_BUFFER {
            *rb = BytesMut::with_capacity(READ_BUFFER);
        }
        while let Some((msg, len)) = opener.next_message()? {
            shared.metrics.received(message_kind_index(&msg), len);
            match msg {
                Message::Goodbye { reason } => {
                    // The peer sends nothing more here: stop using this connection, answer
                    // with our Goodbye, and read on until it closes.
                    tracing::debug!(%peer, %reason, "goodbye received");
                    link.detach(conn.id);
                    let bye = CloseReason::Goodbye(reason);
                    conn.close_with(bye.clone());
                    goodbye = Some(bye);
                }
                Message::Request { id, payload } => {
                    let ev = Event::Request {
                        peer,
                        payload,
                        responder: link.responder(id),
                    };
                    shared.events.emit_payload(events, ev).await;
                }
                Message::Response { id, payload } => {
                    if !link.complete(id, payload) {
                        tracing::trace!(%peer, id, "response nobody waits for");
                    }
                }
                message => {
                    let ev = Event::Message { peer, message };
                    shared.events.emit_payload(events, ev).await;
                }
            }
        }
    }
}

/// Writes `out` unless the connection is aborted first; false if it was not written.
async fn write_out(w: &mut WriteHalf, out: &[u8], abort: &CancellationToken) -> bool {
    tokio::select! {
        r = w.write_all(out) => r.is_ok(),
        _ = abort.cancelled() => false,
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    shared: Arc<Shared>,
    link: Arc<dyn PoolLink>,
    conn: ConnRef,
    mut sealer: Sealer,
    mut w: WriteHalf,
    abort: CancellationToken,
    write_done: CancellationToken,
    activity: Arc<Activity>,
) {
    let peer = link.peer();
    let mut msgs: Vec<Message> = Vec::new();
    let mut out = BytesMut::new();
    let mut last_batch = 0;
    loop {
        let closing = conn.close.is_cancelled();
        msgs.clear();
        let _ = link.take(conn.id, shared.batch_bytes, &mut msgs);
        if !msgs.is_empty() {
            let n = msgs.len();
            for m in msgs.drain(..) {
                let kind = message_kind_index(&m);
                match sealer.push(m) {
                    Ok(len) => shared.metrics.sent(kind, len),
                    Err(e) => {
                        // Payloads are checked when queued, so only a misconfiguration lands here.
                        tracing::warn!(%peer, error = %e, "frame dropped");
                        shared.metrics.drop_msg("frame_too_large");
                    }
                }
            }
            if let Err(e) = sealer.seal_into(&mut out) {
                tracing::warn!(%peer, error = %e, "encryption failed");
                break_abort(&shared, &*link, &conn, &abort, n);
                return;
            }
            let ok = write_out(&mut w, &out, &abort).await;
            last_batch = out.len();
            out.clear();
            if out.capacity() > 4 * shared.batch_bytes.max(1 << 16) {
                out = BytesMut::new();
            }
            sealer.shrink();
            if !ok {
                break_abort(&shared, &*link, &conn, &abort, n);
                return;
            }
            activity.touch();
            continue;
        }
        if closing {
            break;
        }
        // Idle after a small batch: a burst's buffers go back (bulk transfers, whose batches
        // are large, keep theirs between batches).
        if last_batch <= SMALL_MESSAGE && out.capacity() > IDLE_BUFFER {
            out = BytesMut::new();
            msgs = Vec::new();
        }
        let idle_at = activity.last() + shared.idle_timeout;
        tokio::select! {
            biased;
            _ = abort.cancelled() => return,
            _ = conn.close.cancelled() => {}
            _ = conn.wake.notified() => {}
            _ = tokio::time::sleep_until(idle_at) => {
                if activity.last() + shared.idle_timeout <= Instant::now() {
                    tracing::debug!(%peer, "closing idle connection");
                    link.detach(conn.id);
                    conn.close_with(CloseReason::Idle);
                }
            }
        }
    }
    let reason = match conn.why.get() {
        _ if shared.events.closing.is_cancelled() => CloseReason::Shutdown.to_string(),
        Some(CloseReason::Goodbye(_)) | None => "close".to_string(),
        Some(why) => why.to_string(),
    };
    let bye = Message::Goodbye { reason };
    let kind = message_kind_index(&bye);
    if let Ok(len) = sealer.push(bye) {
        shared.metrics.sent(kind, len);
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
    shared: &Shared,
    link: &dyn PoolLink,
    conn: &ConnRef,
    abort: &CancellationToken,
    lost: usize,
) {
    for _ in 0..lost {
        shared.metrics.drop_msg("connection_lost");
    }
    shared.lost.fetch_add(lost as u64, Ordering::SeqCst);
    link.detach(conn.id);
    conn.close_with(CloseReason::WriteFailed);
    abort.cancel();
}
