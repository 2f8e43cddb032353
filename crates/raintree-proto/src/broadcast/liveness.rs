//! What a node remembers about its peers' health (SPEC 4): ACK round-trip estimates that set
//! adaptive deadlines, and bounded-time suspicion of peers that failed.
//!
//! Suspicion comes from an overdue ACK or reply, or at once from the transport
//! ([`super::Engine::peer_unreachable`]). A suspected peer gets no tree duty: its part goes
//! straight to the next candidates and the peer itself gets only a small probe (an IGYW
//! offer), whose answer clears the suspicion. Suspicion also lapses on its own after
//! `suspicion_ttl`, so a peer that comes back is used again at the latest then.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::peers::{Address, PeerList};
use crate::wire::MessageId;

/// RFC 6298 smoothed round-trip time and its variation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RttEstimate {
    srtt: Duration,
    rttvar: Duration,
}

impl RttEstimate {
    fn first(r: Duration) -> Self {
        RttEstimate {
            srtt: r,
            rttvar: r / 2,
        }
    }

    fn update(&mut self, r: Duration) {
        let diff = self.srtt.abs_diff(r);
        // Gains 1/4 and 1/8 as RFC 6298 section 2.3 gives them.
        self.rttvar = self.rttvar * 3 / 4 + diff / 4;
        self.srtt = self.srtt * 7 / 8 + r / 8;
    }

    /// `SRTT + 4 * RTTVAR`, before clamping.
    fn rto(&self) -> Duration {
        self.srtt.saturating_add(self.rttvar.saturating_mul(4))
    }

    /// `4 * SRTT + 4 * RTTVAR`: a first send to a peer may wait for a TCP connect and the
    /// Noise handshake (about three round trips) before its own round trip starts.
    fn first_contact(&self) -> Duration {
        self.srtt
            .saturating_mul(4)
            .saturating_add(self.rttvar.saturating_mul(4))
    }
}

/// A send whose answer (ACK or IGYW reply) is awaited, indexed by the peer it went to, so a
/// transport failure signal finds it without scanning every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Awaited {
    pub id: MessageId,
    /// The seen-entry's insertion number: tokens restart when an id is re-inserted.
    pub entry_seq: u64,
    pub token: u32,
}

#[derive(Clone, Debug, Default)]
struct Health {
    rtt: Option<RttEstimate>,
    suspected_until: Option<Duration>,
    awaited: Vec<Awaited>,
    /// Messages given up on this peer, newest last: offered to it when it is heard from.
    owed: VecDeque<(MessageId, u64)>,
}

/// Most messages remembered as owed to one failed peer; older ones are left to clean-up.
pub(crate) const OWED_PER_PEER: usize = 256;

/// Deadline bounds and suspicion lifetime, copied from the engine config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LivenessConfig {
    pub initial: Duration,
    pub min: Duration,
    pub max: Duration,
    pub suspicion_ttl: Duration,
}

/// Per-peer health, bounded by the peer list: peers that leave the list are forgotten.
#[derive(Debug)]
pub(crate) struct Liveness {
    config: LivenessConfig,
    peers: HashMap<Address, Health>,
    /// Every sample from every peer: the first-contact deadline for peers not yet measured.
    overall: Option<RttEstimate>,
}

impl Liveness {
    pub fn new(config: LivenessConfig) -> Self {
        Liveness {
            config,
            peers: HashMap::new(),
            overall: None,
        }
    }

    fn clamp(&self, d: Duration) -> Duration {
        d.clamp(self.config.min, self.config.max.max(self.config.min))
    }

    /// How long an answer from `peer` may take: its own estimate; else, for a first contact,
    /// the node-wide estimate with room for setting up a connection; else the configured
    /// initial deadline.
    pub fn deadline(&self, peer: &Address) -> Duration {
        if let Some(own) = self.peers.get(peer).and_then(|h| h.rtt) {
            return self.clamp(own.rto());
        }
        match self.overall {
            Some(est) => self.clamp(est.first_contact()),
            None => self.config.initial,
        }
    }

    /// True once any round trip has been measured: deadlines are estimates, not the default.
    pub fn measured(&self) -> bool {
        self.overall.is_some()
    }

    /// The earliest moment to look again at a send made at `sent_at` that has been checked
    /// `checks` times while nothing was measured: doubling from the minimum up to the initial
    /// deadline, so the first samples shorten deadlines already running.
    pub fn recheck_at(&self, sent_at: Duration, checks: u32) -> Duration {
        let step = self
            .config
            .min
            .saturating_mul(1u32 << checks.min(20))
            .min(self.config.initial);
        sent_at.saturating_add(step)
    }

    /// Records a round trip measured on an answer from `peer` (Karn: each send is answered
    /// once, so every sample is unambiguous).
    pub fn sample(&mut self, peer: Address, rtt: Duration) {
        let h = self.peers.entry(peer).or_default();
        match &mut h.rtt {
            Some(e) => e.update(rtt),
            None => h.rtt = Some(RttEstimate::first(rtt)),
        }
        match &mut self.overall {
            Some(e) => e.update(rtt),
            None => self.overall = Some(RttEstimate::first(rtt)),
        }
    }

    /// Whether `peer` failed recently enough to be passed over.
    pub fn is_suspected(&self, peer: &Address, now: Duration) -> bool {
        self.peers
            .get(peer)
            .and_then(|h| h.suspected_until)
            .is_some_and(|until| now < until)
    }

    /// Marks `peer` as failed until `now + suspicion_ttl`; true if it was not suspected yet.
    pub fn suspect(&mut self, peer: Address, now: Duration) -> bool {
        let ttl = self.config.suspicion_ttl;
        let h = self.peers.entry(peer).or_default();
        let fresh = h.suspected_until.is_none_or(|until| now >= until);
        h.suspected_until = Some(now.saturating_add(ttl));
        fresh
    }

    /// `peer` answered: it is used again at once, and gets back what it is owed (message id
    /// and seen-entry number of each).
    pub fn heard_from(&mut self, peer: &Address) -> VecDeque<(MessageId, u64)> {
        match self.peers.get_mut(peer) {
            Some(h) => {
                h.suspected_until = None;
                std::mem::take(&mut h.owed)
            }
            None => VecDeque::new(),
        }
    }

    /// Remembers that `peer` failed to take message `id` (seen-entry `seq`); returns the entry
    /// that fell off the end to stay within [`OWED_PER_PEER`], if any.
    pub fn owe(&mut self, peer: Address, id: MessageId, seq: u64) -> Option<(MessageId, u64)> {
        let h = self.peers.entry(peer).or_default();
        h.owed.push_back((id, seq));
        (h.owed.len() > OWED_PER_PEER)
            .then(|| h.owed.pop_front())
            .flatten()
    }

    /// Remembers that an answer from `peer` is awaited for `a`.
    pub fn await_answer(&mut self, peer: Address, a: Awaited) {
        self.peers.entry(peer).or_default().awaited.push(a);
    }

    /// The answer for `a` came or its deadline passed: stop indexing it.
    pub fn answered(&mut self, peer: &Address, a: &Awaited) {
        if let Some(h) = self.peers.get_mut(peer) {
            if let Some(i) = h.awaited.iter().position(|x| x == a) {
                h.awaited.swap_remove(i);
            }
        }
    }

    /// Whether `a` is indexed as awaited from `peer`.
    pub fn is_awaited(&self, peer: &Address, a: &Awaited) -> bool {
        self.peers.get(peer).is_some_and(|h| h.awaited.contains(a))
    }

    /// Everything still awaited from `peer`, which the transport says is gone.
    pub fn take_awaited(&mut self, peer: &Address) -> Vec<Awaited> {
        self.peers
            .get_mut(peer)
            .map(|h| std::mem::take(&mut h.awaited))
            .unwrap_or_default()
    }

    /// Forgets the peers that are no longer listed, keeping memory bounded by the list.
    pub fn retain_listed(&mut self, list: &PeerList) {
        self.peers
            .retain(|a, h| list.position(a).is_some() || !h.awaited.is_empty());
    }

    /// Peers suspected at `now`.
    pub fn suspected_count(&self, now: Duration) -> usize {
        self.peers
            .values()
            .filter(|h| h.suspected_until.is_some_and(|u| now < u))
            .count()
    }

    /// Peers with any remembered state.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Liveness {
        Liveness::new(LivenessConfig {
            initial: Duration::from_millis(500),
            min: Duration::from_millis(20),
            max: Duration::from_secs(2),
            suspicion_ttl: Duration::from_secs(10),
        })
    }

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn deadlines_follow_rfc6298_and_are_clamped() {
        let mut l = live();
        let a = Address::from_index(1);
        let b = Address::from_index(2);
        assert_eq!(l.deadline(&a), ms(500));
        l.sample(a, ms(100));
        // First sample: SRTT = R, RTTVAR = R/2, RTO = R + 4 * R/2.
        assert_eq!(l.deadline(&a), ms(300));
        // A peer never measured borrows the node-wide estimate, with room for a connection
        // set-up: 4 * 100 + 4 * 50.
        assert_eq!(l.deadline(&b), ms(600));
        l.sample(a, ms(100));
        // RTTVAR = 3/4 * 50 + 1/4 * 0 = 37.5; SRTT stays 100.
        assert_eq!(l.deadline(&a), Duration::from_micros(250_000));
        for _ in 0..50 {
            l.sample(a, ms(1));
        }
        assert_eq!(l.deadline(&a), ms(20), "clamped to the minimum");
        l.sample(b, ms(5_000));
        assert_eq!(l.deadline(&b), ms(2_000), "clamped to the maximum");
    }

    #[test]
    fn rechecks_double_up_to_the_initial_deadline() {
        let l = live();
        let t = ms(1000);
        assert_eq!(l.recheck_at(t, 0), ms(1020));
        assert_eq!(l.recheck_at(t, 1), ms(1040));
        assert_eq!(l.recheck_at(t, 10), ms(1500));
    }

    #[test]
    fn suspicion_expires_and_is_cleared_by_an_answer() {
        let mut l = live();
        let a = Address::from_index(1);
        assert!(l.suspect(a, ms(0)));
        assert!(!l.suspect(a, ms(1)), "already suspected");
        assert!(l.is_suspected(&a, ms(9_999)));
        assert!(!l.is_suspected(&a, ms(10_001)), "suspicion lapses");
        l.suspect(a, ms(20_000));
        let id = MessageId {
            origin: a,
            nonce: 1,
        };
        assert_eq!(l.owe(a, id, 3), None);
        assert_eq!(l.heard_from(&a), VecDeque::from([(id, 3)]));
        assert!(l.heard_from(&a).is_empty(), "owed once");
        assert!(!l.is_suspected(&a, ms(20_001)));
    }

    #[test]
    fn awaited_answers_are_indexed_per_peer() {
        let mut l = live();
        let a = Address::from_index(1);
        let id = MessageId {
            origin: a,
            nonce: 7,
        };
        let w = |token| Awaited {
            id,
            entry_seq: 1,
            token,
        };
        l.await_answer(a, w(1));
        l.await_answer(a, w(2));
        l.answered(&a, &w(1));
        assert_eq!(l.take_awaited(&a), vec![w(2)]);
        assert!(l.take_awaited(&a).is_empty());
        let list = PeerList::new([Address::from_index(9)]);
        l.retain_listed(&list);
        assert_eq!(l.len(), 0);
    }
}
