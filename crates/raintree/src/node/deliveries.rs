//! The application's delivery stream, and the bytes it holds counted against the node's one
//! delivery budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use super::Delivery;

/// What a delivery costs against `delivery_buffer_bytes` beyond its payload, so a flood of
/// empty payloads is bounded too.
pub(super) const DELIVERY_OVERHEAD: usize = 64;

/// A delivery's cost against `delivery_buffer_bytes`.
pub(super) fn delivery_cost(d: &Delivery) -> usize {
    d.payload.len() + DELIVERY_OVERHEAD
}

/// Bytes of deliveries in the application's channel, shared by the node (which adds what it
/// puts in) and the stream (which takes off what the application reads).
#[derive(Default)]
pub(super) struct Unread {
    bytes: AtomicUsize,
    /// Wakes a node that stopped reading the network once the application reads again.
    read: Notify,
}

impl Unread {
    /// Bytes in the channel now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// `d` is about to enter the channel.
    pub fn add(&self, d: &Delivery) {
        self.bytes.fetch_add(delivery_cost(d), Ordering::AcqRel);
    }

    /// Resolves after the application next reads a delivery.
    pub async fn read(&self) {
        self.read.notified().await;
    }

    fn taken(&self, d: &Delivery) {
        self.bytes.fetch_sub(delivery_cost(d), Ordering::AcqRel);
        self.read.notify_one();
    }
}

/// Broadcasts and direct messages delivered to the application, each once, in order.
pub struct Deliveries {
    rx: mpsc::Receiver<Delivery>,
    unread: Arc<Unread>,
}

impl Deliveries {
    pub(super) fn new(rx: mpsc::Receiver<Delivery>, unread: Arc<Unread>) -> Self {
        Deliveries { rx, unread }
    }

    /// The next delivery; `None` once the node stopped and every delivery was read.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let d = self.rx.recv().await?;
        self.unread.taken(&d);
        Some(d)
    }

    /// The next delivery if one is ready now.
    pub fn try_recv(&mut self) -> Result<Delivery, mpsc::error::TryRecvError> {
        let d = self.rx.try_recv()?;
        self.unread.taken(&d);
        Ok(d)
    }
}
