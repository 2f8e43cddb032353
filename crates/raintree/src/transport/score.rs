//! Per-peer misbehaviour scores and timed bans.
//!
//! Pure data: no locks, no I/O; the caller passes the time. Points decay exponentially with a
//! half-life, so an honest peer's rare glitch fades long before it adds up to a ban, while a
//! peer that keeps misbehaving crosses the threshold within a few offences.

use std::collections::HashMap;
use std::time::Duration;

use raintree_proto::Address;
use tokio::time::Instant;

/// Something a peer did that no correct peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offence {
    /// A frame longer than the limit.
    Oversized,
    /// An undecodable message.
    Malformed,
    /// The stream ended inside a frame or a Noise message.
    Truncated,
    /// A Noise message that failed authentication or was shorter than its tag.
    Decrypt,
    /// A broadcast whose origin is not proven (`EngineError::Forged`).
    Forged,
    /// A tree copy with a level or range no correct sender could send, refused.
    ImpossibleRange,
    /// A tree copy whose range was cut to what a correct sender could give
    /// (`Output::Misbehaved`); also sent by honest peers whose peer list differs for a while.
    RangeCut,
    /// Any other input the protocol refused, or an `Output::Misbehaved` report.
    Refused,
    /// A fresh id of the peer's own refused because it held its whole share of a seen-set
    /// under pressure (`EngineError::Flood { own: true }`).
    Flood,
}

impl Offence {
    /// Every offence, in label order.
    pub const ALL: [Offence; 9] = [
        Offence::Oversized,
        Offence::Malformed,
        Offence::Truncated,
        Offence::Decrypt,
        Offence::Forged,
        Offence::ImpossibleRange,
        Offence::RangeCut,
        Offence::Refused,
        Offence::Flood,
    ];

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Offence::Oversized => "oversized",
            Offence::Malformed => "malformed",
            Offence::Truncated => "truncated",
            Offence::Decrypt => "decrypt",
            Offence::Forged => "forged",
            Offence::ImpossibleRange => "impossible_range",
            Offence::RangeCut => "range_cut",
            Offence::Refused => "refused",
            Offence::Flood => "flood",
        }
    }

    /// Points against the default threshold of 100. A bad frame closes its connection, so it
    /// costs a reconnect and a handshake per offence: a quarter of a ban each. A forgery needs
    /// a signature check per copy; a refusal is cheap to absorb. A cut range is already
    /// harmless and honest peers send them while peer lists differ, so it takes a sustained
    /// stream of them (hundreds within a half-life) to ban. So does a flood: an honest origin
    /// may overrun its share while the network is overloaded, an attacker's flood is
    /// thousands of messages a second.
    pub fn points(self) -> f64 {
        match self {
            Offence::Oversized | Offence::Malformed | Offence::Decrypt => 25.0,
            Offence::Truncated => 10.0,
            Offence::Forged => 10.0,
            Offence::ImpossibleRange => 5.0,
            Offence::RangeCut | Offence::Flood => 0.25,
            Offence::Refused => 2.0,
        }
    }
}

/// Scoring settings (part of `TransportConfig`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreConfig {
    /// A peer whose score reaches this (within half a point) is disconnected and banned; 0
    /// turns scoring off.
    pub ban_threshold: f64,
    /// How long a ban lasts.
    pub ban_duration: Duration,
    /// Time for a score to halve.
    pub half_life: Duration,
    /// Most peers scored at once; the lowest scores are forgotten first.
    pub max_tracked: usize,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            ban_threshold: 100.0,
            ban_duration: Duration::from_secs(600),
            half_life: Duration::from_secs(60),
            max_tracked: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    at: Instant,
    banned_until: Option<Instant>,
}

/// What a penalty led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Below the threshold (or already banned).
    Scored,
    /// The threshold was crossed: the peer is banned from now on.
    Banned,
}

/// Scores and bans of every peer that has offended recently.
#[derive(Debug)]
pub(crate) struct Scores {
    config: ScoreConfig,
    peers: HashMap<Address, Entry>,
}

impl Scores {
    pub fn new(config: ScoreConfig) -> Self {
        Self {
            config,
            peers: HashMap::new(),
        }
    }

    fn decayed(&self, e: &Entry, now: Instant) -> f64 {
        decay(self.config.half_life, e, now)
    }

    /// Adds `offence` to `peer`'s score.
    pub fn penalise(&mut self, peer: Address, offence: Offence, now: Instant) -> Verdict {
        if self.config.ban_threshold <= 0.0 {
            return Verdict::Scored;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.max_tracked {
            self.make_room(now);
        }
        let fresh = Entry {
            score: 0.0,
            at: now,
            banned_until: None,
        };
        let e = *self.peers.get(&peer).unwrap_or(&fresh);
        if e.banned_until.is_some_and(|t| t > now) {
            return Verdict::Scored;
        }
        let score = self.decayed(&e, now) + offence.points();
        // Half a point of slack: the decay over the milliseconds between a burst's offences
        // must not spare the one that makes it up to the threshold.
        let banned = score + 0.5 >= self.config.ban_threshold;
        self.peers.insert(
            peer,
            Entry {
                // A ban wipes the slate: the peer comes back at zero, not one offence short.
                score: if banned { 0.0 } else { score },
                at: now,
                banned_until: banned.then(|| now + self.config.ban_duration),
            },
        );
        if banned {
            Verdict::Banned
        } else {
            Verdict::Scored
        }
    }

    /// True while `peer` is banned.
    pub fn is_banned(&self, peer: &Address, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|e| e.banned_until)
            .is_some_and(|t| t > now)
    }

    /// Peers banned at `now`.
    pub fn banned(&self, now: Instant) -> usize {
        self.peers
            .values()
            .filter(|e| e.banned_until.is_some_and(|t| t > now))
            .count()
    }

    /// `peer`'s current score (0 if unknown).
    #[cfg(test)]
    pub fn score(&self, peer: &Address, now: Instant) -> f64 {
        self.peers.get(peer).map_or(0.0, |e| self.decayed(e, now))
    }

    /// Forgets entries that no longer matter, then (if still full) the lowest unbanned score,
    /// so an attacker with many identities cannot grow the map or evict a ban with scores
    /// alone; only when every entry is a live ban does the soonest-ending ban go.
    fn make_room(&mut self, now: Instant) {
        let floor = self.config.ban_threshold / 100.0;
        let half = self.config.half_life;
        self.peers.retain(|_, e| {
            let banned = e.banned_until.is_some_and(|t| t > now);
            banned || decay(half, e, now) >= floor
        });
        if self.peers.len() < self.config.max_tracked {
            return;
        }
        let lowest = self
            .peers
            .iter()
            .filter(|(_, e)| e.banned_until.is_none_or(|t| t <= now))
            .min_by(|a, b| decay(half, a.1, now).total_cmp(&decay(half, b.1, now)))
            .map(|(a, _)| *a);
        // Full of live bans (many identities, each banned): the one ending soonest goes, so
        // the map stays bounded even then.
        let victim = lowest.or_else(|| {
            self.peers
                .iter()
                .min_by_key(|(_, e)| e.banned_until)
                .map(|(a, _)| *a)
        });
        if let Some(a) = victim {
            self.peers.remove(&a);
        }
    }
}

/// `e`'s score at `now`, halving every `half_life`.
fn decay(half_life: Duration, e: &Entry, now: Instant) -> f64 {
    let half = half_life.as_secs_f64();
    if half <= 0.0 {
        return 0.0;
    }
    let dt = now.saturating_duration_since(e.at).as_secs_f64();
    e.score * 0.5f64.powf(dt / half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_md_lists_every_offence_label() {
        let doc = include_str!("../../../../docs/WIRE.md");
        let at = doc
            .find("`penalties{offence}`")
            .expect("WIRE.md lists offences");
        let list = &doc[at..at + doc[at..].find('.').unwrap()];
        for o in Offence::ALL {
            assert!(list.contains(&format!("`{}`", o.label())), "{o:?} missing");
        }
    }

    fn cfg() -> ScoreConfig {
        ScoreConfig {
            ban_threshold: 100.0,
            ban_duration: Duration::from_secs(60),
            half_life: Duration::from_secs(10),
            max_tracked: 4,
        }
    }

    /// Penalises `peer` `n` times at `now`; the verdicts, in order.
    fn penalise_n(
        s: &mut Scores,
        peer: Address,
        o: Offence,
        n: usize,
        now: Instant,
    ) -> Vec<Verdict> {
        (0..n).map(|_| s.penalise(peer, o, now)).collect()
    }

    #[test]
    fn repeated_offences_ban_and_the_ban_expires() {
        let t0 = Instant::now();
        let mut s = Scores::new(cfg());
        let p = Address([1; 20]);
        assert_eq!(
            penalise_n(&mut s, p, Offence::Forged, 9, t0),
            [Verdict::Scored; 9]
        );
        assert!(!s.is_banned(&p, t0));
        assert_eq!(s.penalise(p, Offence::Forged, t0), Verdict::Banned);
        assert!(s.is_banned(&p, t0));
        assert_eq!(s.banned(t0), 1);
        // More offences while banned neither extend nor re-count the ban.
        assert_eq!(s.penalise(p, Offence::Forged, t0), Verdict::Scored);
        let later = t0 + Duration::from_secs(60);
        assert!(!s.is_banned(&p, later));
        assert_eq!(s.banned(later), 0);
        assert_eq!(s.score(&p, later), 0.0);
    }

    #[test]
    fn scores_decay_so_rare_glitches_never_ban() {
        let mut now = Instant::now();
        let mut s = Scores::new(cfg());
        let p = Address([2; 20]);
        // A malformed frame every half-life settles at twice its points, below the threshold.
        for _ in 0..1000 {
            assert_eq!(s.penalise(p, Offence::Malformed, now), Verdict::Scored);
            now += Duration::from_secs(10);
        }
        assert!(s.score(&p, now) <= 50.0 + 1e-6);
        // The same offences back to back ban.
        penalise_n(&mut s, p, Offence::Malformed, 3, now);
        assert!(s.is_banned(&p, now));
    }

    #[test]
    fn the_map_stays_bounded_and_keeps_bans() {
        let now = Instant::now();
        let mut s = Scores::new(cfg());
        let banned = Address([0; 20]);
        penalise_n(&mut s, banned, Offence::Oversized, 4, now);
        assert!(s.is_banned(&banned, now));
        for i in 1..=200u8 {
            s.penalise(Address([i; 20]), Offence::Refused, now);
        }
        assert!(s.peers.len() <= 4);
        assert!(s.is_banned(&banned, now));
    }

    #[test]
    fn the_map_stays_bounded_when_full_of_bans() {
        let mut now = Instant::now();
        let mut s = Scores::new(cfg());
        for i in 0..50u8 {
            penalise_n(&mut s, Address([i; 20]), Offence::Oversized, 4, now);
            assert!(s.peers.len() <= 4);
            now += Duration::from_millis(10);
        }
        // The latest bans are the ones kept.
        assert!(s.is_banned(&Address([49; 20]), now));
        assert!(!s.is_banned(&Address([0; 20]), now));
    }

    #[test]
    fn a_zero_threshold_turns_scoring_off() {
        let now = Instant::now();
        let mut s = Scores::new(ScoreConfig {
            ban_threshold: 0.0,
            ..cfg()
        });
        let verdicts = penalise_n(&mut s, Address([3; 20]), Offence::Oversized, 100, now);
        assert_eq!(verdicts, [Verdict::Scored; 100]);
        assert_eq!(s.banned(now), 0);
    }
}
