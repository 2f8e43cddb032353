//! Byzantine nodes for the simulator: what a hostile node does to the traffic of its engine.
//!
//! A hostile node runs a normal engine (so it ACKs and answers offers like anyone), and the
//! simulator rewrites what it sends according to its [`Hostile`] behaviour.

use std::fmt;
use std::str::FromStr;

use crate::broadcast::ParseEnumError;
use crate::wire::{BroadcastMessage, Route};

/// How hostile nodes misbehave (`raintree sim --hostile`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hostile {
    /// ACKs tree copies, forwards nothing, answers HAVE to every offer.
    #[default]
    Blackhole,
    /// Behaves, and injects copies in the originator's name with other payloads.
    Forge,
    /// Behaves, but marks every tree copy with the largest range a naive receiver accepts.
    Inflate,
    /// Behaves, and sends direct messages with fresh ids of its own after each delivery.
    Flood,
}

impl FromStr for Hostile {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blackhole" => Ok(Hostile::Blackhole),
            "forge" => Ok(Hostile::Forge),
            "inflate" => Ok(Hostile::Inflate),
            "flood" => Ok(Hostile::Flood),
            _ => Err(ParseEnumError {
                kind: "hostile behaviour",
                value: s.into(),
                expected: "blackhole, forge, inflate, flood",
            }),
        }
    }
}

impl fmt::Display for Hostile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hostile::Blackhole => "blackhole",
            Hostile::Forge => "forge",
            Hostile::Inflate => "inflate",
            Hostile::Flood => "flood",
        })
    }
}

/// Forged or fresh copies a forging or flooding node sends per delivery.
pub(crate) const INJECTIONS: usize = 3;

/// What a hostile node sends instead of `msg` to the node `d` places after it in a network of
/// `n`; `None` drops it.
pub(crate) fn rewrite(
    h: Hostile,
    msg: BroadcastMessage,
    d: usize,
    n: usize,
) -> Option<BroadcastMessage> {
    match (h, msg) {
        (Hostile::Blackhole, BroadcastMessage::Gossip(_) | BroadcastMessage::Igyw { .. }) => None,
        (Hostile::Blackhole, BroadcastMessage::IgywReply { id, .. }) => {
            Some(BroadcastMessage::IgywReply { id, want: false })
        }
        (Hostile::Inflate, BroadcastMessage::Gossip(mut g)) if g.route == Route::Tree => {
            g.level_or_range = g
                .level_or_range
                .max(u32::try_from(n - d).unwrap_or(u32::MAX));
            Some(BroadcastMessage::Gossip(g))
        }
        (_, m) => Some(m),
    }
}
