//! The node's single driver task: the only owner of the protocol engine.

use std::time::Duration;

use raintree_proto::broadcast::{Engine, Output, Stats};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{unix_micros, Command, Delivery, IncomingRequest};
use crate::metrics::NodeMetrics;
use crate::transport::{Event, Events, Transport};

pub(super) struct Driver {
    pub engine: Engine,
    pub transport: Transport,
    pub events: Events,
    pub commands: mpsc::Receiver<Command>,
    pub deliveries: mpsc::Sender<Delivery>,
    pub requests: mpsc::Sender<IncomingRequest>,
    pub metrics: NodeMetrics,
    pub stats: watch::Sender<Stats>,
    pub stop: CancellationToken,
}

impl Driver {
    pub async fn run(mut self) {
        let start = Instant::now();
        let mut last = Stats::default();
        loop {
            let deadline = self.engine.poll_timeout().map(|d| start + d);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(start.elapsed(), cmd),
                    None => break,
                },
                ev = self.events.recv() => match ev {
                    Some(ev) => self.event(start.elapsed(), ev),
                    None => break,
                },
                _ = sleep_until(deadline) => self.engine.handle_timeout(start.elapsed()),
            }
            // Publish the step's counters before its outputs leave, so anyone who sees an
            // effect of this step (a delivery downstream) also sees the counters behind it.
            let now = self.engine.stats();
            self.metrics.sync(&mut last, now);
            self.stats.send_replace(now.clone());
            if !self.flush().await {
                break;
            }
        }
    }

    fn command(&mut self, now: Duration, cmd: Command) {
        match cmd {
            Command::Broadcast { payload, reply } => {
                let r = self.engine.broadcast(now, payload, unix_micros());
                let _ = reply.send(r);
            }
            Command::SetPeers(list) => {
                self.metrics.set_peers(list.len());
                if let Err(e) = self.engine.set_peers(list) {
                    tracing::warn!(error = %e, "peer list refused");
                }
            }
        }
    }

    fn event(&mut self, now: Duration, ev: Event) {
        match ev {
            Event::Message { peer, message } => {
                let kind = message.kind();
                if let Err(e) = self.engine.handle_message(now, peer, message) {
                    tracing::debug!(%peer, kind, error = %e, "message refused");
                }
            }
            Event::Request {
                peer,
                payload,
                responder,
            } => {
                let req = IncomingRequest {
                    peer,
                    payload,
                    responder,
                };
                if self.requests.try_send(req).is_err() {
                    // Dropping the responder lets the requester time out instead of waiting on us.
                    tracing::debug!(%peer, "request dropped: application queue full");
                }
            }
            Event::ConnectionUp { peer, inbound } => {
                tracing::debug!(%peer, inbound, "connection up");
            }
            Event::ConnectionDown { peer, reason } => {
                tracing::debug!(%peer, %reason, "connection down");
            }
            Event::Refused { remote, reason } => {
                tracing::info!(%remote, ?reason, "connection refused");
            }
        }
    }

    /// Hands every pending engine output to the transport or the application.
    /// Returns false when the application has dropped its delivery stream's receiver
    /// and the node has been told to stop.
    async fn flush(&mut self) -> bool {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Send { to, message } => self.transport.write(to, message),
                Output::Deliver {
                    id,
                    payload,
                    origin_time_us,
                    hops,
                } => {
                    let now = unix_micros();
                    if origin_time_us > 0 && now >= origin_time_us {
                        self.metrics
                            .observe_latency((now - origin_time_us) as f64 / 1_000_000.0);
                    }
                    let d = Delivery {
                        id,
                        payload,
                        origin_time_us,
                        hops,
                    };
                    // Backpressure: a full delivery queue pauses the protocol until the
                    // application reads; a dropped receiver just discards deliveries.
                    tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => return false,
                        _ = self.deliveries.send(d) => {}
                    }
                }
            }
        }
        true
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
