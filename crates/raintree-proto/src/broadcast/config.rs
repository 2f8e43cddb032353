//! Engine configuration (SPEC 2-6), shared by every node of a network.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::wire::{Strategy, DEFAULT_MAX_PAYLOAD};

/// The redundancy layer of SPEC 5: which ring neighbours get a level-0 push.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Redundancy {
    /// No ring pushes.
    #[default]
    Off,
    /// Push to view offset N-1.
    Left,
    /// Push to view offset +1.
    Right,
    /// Push to both neighbours.
    Both,
}

impl Redundancy {
    /// True when pushes go to offset N-1.
    pub fn left(self) -> bool {
        matches!(self, Redundancy::Left | Redundancy::Both)
    }

    /// True when pushes go to offset +1.
    pub fn right(self) -> bool {
        matches!(self, Redundancy::Right | Redundancy::Both)
    }
}

/// A string that names no variant of a config enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}` (expected one of: {expected})")]
pub struct ParseEnumError {
    /// What was parsed.
    pub kind: &'static str,
    /// The string given.
    pub value: String,
    /// The accepted spellings.
    pub expected: &'static str,
}

impl FromStr for Redundancy {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Redundancy::Off),
            "left" => Ok(Redundancy::Left),
            "right" => Ok(Redundancy::Right),
            "both" => Ok(Redundancy::Both),
            _ => Err(ParseEnumError {
                kind: "redundancy",
                value: s.into(),
                expected: "off, left, right, both",
            }),
        }
    }
}

impl fmt::Display for Redundancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Redundancy::Off => "off",
            Redundancy::Left => "left",
            Redundancy::Right => "right",
            Redundancy::Both => "both",
        })
    }
}

impl FromStr for Strategy {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reference" => Ok(Strategy::Reference),
            "exact" => Ok(Strategy::Exact),
            _ => Err(ParseEnumError {
                kind: "strategy",
                value: s.into(),
                expected: "reference, exact",
            }),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Reference => "reference",
            Strategy::Exact => "exact",
        })
    }
}

/// How a node runs the protocol. All nodes of a network should agree on it.
#[derive(Clone, Debug)]
pub struct Config {
    /// Which tree (SPEC 2 or 3).
    pub strategy: Strategy,
    /// Whether tree sends expect ACKs (SPEC 4).
    pub acks: bool,
    /// How long a tree send waits for its ACK before any round trip has been measured; after
    /// that, deadlines follow the measured round trips (RFC 6298).
    pub ack_timeout: Duration,
    /// The shortest adaptive ACK deadline.
    pub min_ack_timeout: Duration,
    /// The longest adaptive ACK deadline.
    pub max_ack_timeout: Duration,
    /// How long a peer that failed is passed over unless it answers a probe first.
    pub suspicion_ttl: Duration,
    /// The redundancy layer (SPEC 5).
    pub redundancy: Redundancy,
    /// Whether the IGYW clean-up layer runs (SPEC 6).
    pub cleanup: bool,
    /// How long an IGYW offer waits for its reply before skipping that neighbour.
    pub igyw_timeout: Duration,
    /// How many unresponsive neighbours an IGYW chain skips before it stops.
    pub igyw_skip_limit: u32,
    /// How many HAVE answers in a row an IGYW chain passes before it stops. A HAVE is a claim
    /// nobody checks: a black hole (ACKs, forwards nothing, answers HAVE) must not end the
    /// chain just before the nodes it starved (docs/HOSTILE.md). 1 stops at the first HAVE.
    pub igyw_have_limit: u32,
    /// Whether a HAVE from the first node of a clean-up window part vouches for the whole part
    /// (cheaper; off by default, as a black hole's HAVE would starve the part).
    pub trust_window_have: bool,
    /// Delay between finishing tree duty and the first IGYW offer.
    pub cleanup_delay: Duration,
    /// Most message ids remembered for dedup.
    pub seen_capacity: usize,
    /// How long a message id is remembered (longer while it still has timers).
    pub seen_ttl: Duration,
    /// Most ids one origin may hold in the seen-set (entries and tombstones) once it holds
    /// half of `seen_capacity`; all unlisted origins share one such share. A flood from one origin then
    /// cannot crowd out the others' broadcasts: past its share, its new ids are refused.
    pub origin_share: usize,
    /// Bytes of messages this node keeps after its first sends, for resends, clean-up and
    /// peers it owes them: each counts its payload plus `HELD_ENTRY_BYTES` of bookkeeping.
    /// Past it, a message received from a peer is still delivered and forwarded but tracked
    /// without ACKs or clean-up, and owed messages are kept only while half of it is free:
    /// what peers send cannot grow held messages past this plus one (the node's own
    /// broadcasts are always held).
    pub held_bytes: usize,
    /// Largest payload accepted or broadcast.
    pub max_payload: usize,
    /// Forward every received tree copy, as the Go reference did (for conformance tests).
    pub forward_duplicates: bool,
    /// Verify every broadcast's origin signature before accepting it (SPEC 7). A node always
    /// does; only the simulator and unit tests may turn it off for speed.
    pub verify_signatures: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strategy: Strategy::Exact,
            acks: true,
            ack_timeout: Duration::from_millis(500),
            min_ack_timeout: Duration::from_millis(200),
            max_ack_timeout: Duration::from_secs(2),
            suspicion_ttl: Duration::from_secs(300),
            redundancy: Redundancy::Off,
            cleanup: false,
            igyw_timeout: Duration::from_millis(500),
            igyw_skip_limit: 8,
            igyw_have_limit: 4,
            trust_window_have: false,
            cleanup_delay: Duration::from_millis(1000),
            seen_capacity: 65_536,
            seen_ttl: Duration::from_secs(120),
            origin_share: 16_384,
            held_bytes: 32 * 1024 * 1024,
            max_payload: DEFAULT_MAX_PAYLOAD,
            forward_duplicates: false,
            verify_signatures: true,
        }
    }
}
