//! The ledger of awaited answers: tree sends waiting for their ACK and IGYW offers waiting for
//! their reply. It owns their tokens and deadlines, and settling one (matching it, taking it
//! off the liveness index, sampling the round trip or suspecting the peer) is written here
//! once, for every way an answer ends: it came, its deadline passed, or its peer is gone.

use std::time::Duration;

use super::engine::Ctx;
use super::liveness::Awaited;
use super::timers::TimerKind;
use crate::peers::Address;

/// What an IGYW offer is for, which decides what its answer or silence leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OfferKind {
    /// Liveness probe of a suspected tree target; a WANT gets a leaf copy marked `lor`.
    Probe { lor: u32 },
    /// This node's own clean-up chain towards its right (SPEC 6), at view `offset`.
    Chain,
    /// Part of a clean-up window this node answers for, at view `offset`.
    Window,
}

/// What a pending send awaits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Awaiting {
    /// The ACK of a tree copy marked `lor` to the first node of the part at view `offset`.
    Ack {
        offset: usize,
        lor: u32,
        /// Deadline checks made while no round trip had been measured yet.
        checks: u32,
    },
    /// The reply to an IGYW offer of the window `[offset, offset + span)`.
    Offer {
        kind: OfferKind,
        offset: usize,
        span: u32,
    },
}

/// A send whose answer is awaited.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub to: Address,
    pub token: u32,
    /// When it was sent: the answer's round trip feeds the deadline estimate.
    pub sent_at: Duration,
    pub what: Awaiting,
}

/// One message's awaited answers.
#[derive(Clone, Debug, Default)]
pub(super) struct Ledger {
    acks: Vec<Pending>,
    offers: Vec<Pending>,
    next_token: u32,
    /// The latest deadline of any timer of this message: the entry outlives it.
    latest_deadline: Duration,
}

/// Which awaited answer an event settles.
#[derive(Clone, Copy, Debug)]
pub(super) enum Match {
    /// The one with this token (its timer fired, or its peer is gone).
    Token(u32),
    /// The ACK `from` owes for a copy marked `lor`.
    Ack { from: Address, lor: u32 },
    /// An offer made to `from`: only a peer asked may answer, so WANTs cannot be replayed.
    Offer { from: Address },
}

/// How an awaited answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// It came.
    Answered,
    /// Its deadline passed.
    Timeout,
    /// The transport reported the peer unreachable (the liveness index already dropped it).
    Unreachable,
}

impl Ledger {
    /// Nothing is awaited.
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty() && self.offers.is_empty()
    }

    /// Whether the tree send with this token still awaits its ACK.
    pub fn awaits_ack(&self, token: u32) -> bool {
        self.acks.iter().any(|p| p.token == token)
    }

    /// Whether the offer with this token still awaits its reply.
    pub fn awaits_offer(&self, token: u32) -> bool {
        self.offers.iter().any(|p| p.token == token)
    }

    /// Whether an offer to `to` is awaited.
    pub fn offered_to(&self, to: &Address) -> bool {
        self.offers.iter().any(|p| p.to == *to)
    }

    /// Whether an offer of this node's own clean-up chain is awaited.
    pub fn chain_offered(&self) -> bool {
        self.offers.iter().any(|p| {
            matches!(
                p.what,
                Awaiting::Offer {
                    kind: OfferKind::Chain,
                    ..
                }
            )
        })
    }

    /// The latest deadline of any timer set for this message.
    pub fn latest_deadline(&self) -> Duration {
        self.latest_deadline
    }

    /// A timer of this message was set at `at`.
    pub fn note_deadline(&mut self, at: Duration) {
        self.latest_deadline = self.latest_deadline.max(at);
    }

    /// Every pending send, ACKs first.
    pub fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.acks.iter().chain(&self.offers)
    }

    fn take(&mut self, m: Match) -> Option<Pending> {
        let (list, i) = match m {
            Match::Token(token) => match self.acks.iter().position(|p| p.token == token) {
                Some(i) => (&mut self.acks, i),
                None => {
                    let i = self.offers.iter().position(|p| p.token == token)?;
                    (&mut self.offers, i)
                }
            },
            Match::Ack { from, lor } => {
                let hit = |p: &Pending| {
                    p.to == from && matches!(p.what, Awaiting::Ack { lor: l, .. } if l == lor)
                };
                let i = self.acks.iter().position(hit)?;
                (&mut self.acks, i)
            }
            Match::Offer { from } => {
                let i = self.offers.iter().position(|p| p.to == from)?;
                (&mut self.offers, i)
            }
        };
        Some(list.swap_remove(i))
    }
}

impl Ctx<'_> {
    /// Records a send to `to` that awaits `what`, and sets the timer that looks at it at `at`.
    pub fn await_answer(&mut self, to: Address, what: Awaiting, at: Duration) {
        let l = &mut self.e.ledger;
        l.next_token = l.next_token.wrapping_add(1);
        let token = l.next_token;
        let p = Pending {
            to,
            token,
            sent_at: self.now,
            what,
        };
        let kind = match what {
            Awaiting::Ack { .. } => {
                l.acks.push(p);
                TimerKind::Ack(token)
            }
            Awaiting::Offer { .. } => {
                l.offers.push(p);
                TimerKind::IgywWait(token)
            }
        };
        let a = self.awaited(token);
        self.node.live.await_answer(to, a);
        self.schedule(at, kind);
    }

    fn awaited(&self, token: u32) -> Awaited {
        Awaited {
            id: self.id,
            entry_seq: self.e.seq(),
            token,
        }
    }

    /// Takes the answer `m` off the ledger as ended by `outcome`: an answer's round trip is
    /// sampled, a failure suspects the peer. Returns it, if it was awaited.
    pub fn settle(&mut self, m: Match, outcome: Outcome) -> Option<Pending> {
        let p = self.e.ledger.take(m)?;
        let a = self.awaited(p.token);
        if outcome != Outcome::Unreachable {
            self.node.live.answered(&p.to, &a);
        }
        match outcome {
            Outcome::Answered => {
                let rtt = self.now.saturating_sub(p.sent_at);
                self.node.live.sample(p.to, rtt);
            }
            Outcome::Timeout | Outcome::Unreachable => {
                if outcome == Outcome::Timeout && matches!(p.what, Awaiting::Ack { .. }) {
                    self.node.stats.ack_timeouts += 1;
                }
                self.node.suspect(p.to, self.now);
            }
        }
        Some(p)
    }

    /// Settles `m` as failed and routes around the failure.
    pub fn fail(&mut self, m: Match, outcome: Outcome) {
        let Some(p) = self.settle(m, outcome) else {
            return;
        };
        match p.what {
            Awaiting::Ack { offset, lor, .. } => self.tree_send_failed(p.to, offset, lor),
            Awaiting::Offer { kind, offset, span } => self.offer_failed(p.to, kind, offset, span),
        }
    }

    /// An ACK came from `from` for a copy marked `lor`.
    pub fn on_ack(&mut self, from: Address, lor: u32) {
        if self
            .settle(Match::Ack { from, lor }, Outcome::Answered)
            .is_some()
        {
            self.node.stats.acks_received += 1;
        }
    }

    /// When to first look at an answer from `to` sent now: its deadline once round trips are
    /// measured, else an early recheck so that the first samples shorten this deadline too.
    pub fn first_check(&self, to: &Address) -> Duration {
        let live = &self.node.live;
        if live.measured() {
            self.now.saturating_add(live.deadline(to))
        } else {
            live.recheck_at(self.now, 0)
        }
    }

    /// How long an offer to `to` waits for its reply.
    pub fn offer_wait(&self, to: &Address) -> Duration {
        if self.node.live.measured() {
            self.node.live.deadline(to)
        } else {
            self.node.config.igyw_timeout
        }
    }

    /// An ACK timer fired: the ACK is overdue by today's estimate, or the timer comes back then.
    pub fn check_ack(&mut self, token: u32) {
        let now = self.now;
        let Some(p) = self.e.ledger.acks.iter_mut().find(|p| p.token == token) else {
            return;
        };
        let live = &self.node.live;
        let due = if live.measured() {
            p.sent_at.saturating_add(live.deadline(&p.to))
        } else {
            let initial = p.sent_at.saturating_add(self.node.config.ack_timeout);
            if now < initial {
                let Awaiting::Ack { checks, .. } = &mut p.what else {
                    return;
                };
                *checks += 1;
                let at = live.recheck_at(p.sent_at, *checks).min(initial);
                self.schedule(at.max(now), TimerKind::Ack(token));
                return;
            }
            initial
        };
        if due > now {
            self.schedule(due, TimerKind::Ack(token));
            return;
        }
        self.fail(Match::Token(token), Outcome::Timeout);
    }
}
