//! What a listed but hostile peer can try against one engine: forged origins, substituted
//! payloads, spoofed direct messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::tests::{exact, key, Net};
use super::*;
use crate::peers::PeerList;
use crate::wire::{Gossip, OriginSignature, Route};

const T0: Duration = Duration::ZERO;

fn outputs<R: rand::RngCore>(e: &mut Engine<R>) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

/// The gossip copies among `e`'s pending outputs, with their receivers (other outputs dropped).
fn sent_gossip<R: rand::RngCore>(e: &mut Engine<R>) -> Vec<(Address, Gossip)> {
    outputs(e)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                message: BroadcastMessage::Gossip(g),
            } => Some((to, g)),
            _ => None,
        })
        .collect()
}

/// Node 0 of `net` broadcasts `payload`; returns the first gossip copy it sends.
fn first_copy(net: &mut Net, payload: &'static [u8]) -> Gossip {
    net.engines[0]
        .broadcast(T0, Bytes::from_static(payload), 42)
        .unwrap();
    sent_gossip(&mut net.engines[0]).swap_remove(0).1
}

mod budgets;
mod forgery;
mod ranges;
