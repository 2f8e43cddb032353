//! The engine's counters, declared once.
//!
//! Every figure built from them (the node's metrics and `/stats`, the simulator's, LocalNet's
//! and the WAN harness's reports) walks [`Stats::FIELDS`] or embeds [`Stats`], so a new counter
//! is one line in the list below.

/// One counter of [`Stats`]: its name, its doc comment and where its value sits.
#[derive(Clone, Copy, Debug)]
pub struct StatsField {
    name: &'static str,
    doc: &'static str,
    get: fn(&Stats) -> u64,
}

impl StatsField {
    /// The field's name: its JSON key, and its metric's name between `raintree_` and `_total`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The field's doc comment on one line without its final full stop, as metric help text
    /// (the Prometheus encoder adds one).
    pub fn help(&self) -> &'static str {
        self.doc.trim().trim_end_matches('.')
    }

    /// The counter's value in `stats`.
    pub fn get(&self, stats: &Stats) -> u64 {
        (self.get)(stats)
    }
}

/// Defines [`Stats`] from one list of counters: the struct, its arithmetic and `FIELDS` cannot
/// disagree, and a new counter is written once.
macro_rules! engine_stats {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// Counters of everything the engine did, for metrics and the simulator.
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        // A reader of another version's counters gets 0 for the ones it lacks.
        #[serde(default)]
        pub struct Stats {
            $($(#[doc = $doc])+ pub $name: u64,)+
        }

        impl Stats {
            /// Every counter in declaration order.
            pub const FIELDS: &'static [StatsField] = &[$(StatsField {
                name: stringify!($name),
                // Each doc line keeps the space after `///`, so the lines join with spaces.
                doc: concat!($($doc),+),
                get: |s: &Stats| s.$name,
            },)+];

            /// Adds every counter of `o` to this one.
            pub fn add(&mut self, o: &Stats) {
                $(self.$name += o.$name;)+
            }

            /// What was counted since `base`, counter by counter (0 where `base` is ahead,
            /// e.g. a restarted node's counters against its previous incarnation's).
            pub fn since(&self, base: &Stats) -> Stats {
                Stats {
                    $($name: self.$name.saturating_sub(base.$name),)+
                }
            }
        }
    };
}

engine_stats! {
    /// Broadcasts originated here.
    broadcasts,
    /// Payloads handed to the application.
    deliveries,
    /// Copies of already known messages received.
    duplicates,
    /// Gossip messages sent (tree, resend, ring and clean-up).
    gossip_sent,
    /// ACKs sent.
    acks_sent,
    /// ACKs received that matched a pending send.
    acks_received,
    /// Tree sends whose ACK did not come in time.
    ack_timeouts,
    /// Replacement sends after a failed tree send (ACK timeout or unreachable peer).
    resends,
    /// Failed tree sends with no node left to take their part.
    give_ups,
    /// Redundancy-layer ring pushes sent.
    redundancy_sends,
    /// IGYW offers sent.
    igyw_sent,
    /// WANT replies received to our offers.
    igyw_want,
    /// HAVE replies received to our offers.
    igyw_have,
    /// Full messages sent after a WANT.
    cleanup_sends,
    /// Messages refused (wrong strategy, oversized).
    rejected,
    /// Seen-set entries dropped for capacity before their age limit.
    evicted,
    /// Transport reports of a peer that cannot be reached.
    unreachable,
    /// Peers newly suspected after a failure (SPEC 4).
    suspicions,
    /// Tree sends passed over because their target was suspected.
    skips,
    /// IGYW probes sent to suspected peers.
    probes,
    /// Failed parts of the exact tree re-split among their remaining nodes.
    resplits,
    /// Messages offered again to a peer that failed to take them, once it was heard from.
    repaid,
    /// Copies dropped as forged: a broadcast whose signature does not verify, a duplicate
    /// whose payload is not the one delivered, a direct message in another node's name.
    forged,
    /// Tree copies refused because no correct sender could give them their level or range.
    impossible,
    /// New ids refused because the seen-set and its tombstones were full of ids within
    /// their age limit.
    seen_full,
    /// New ids refused because their origin held its whole share of a seen-set under
    /// pressure (`Config::origin_share`).
    flood,
    /// Messages from peers that arrived while `held_bytes` was full: delivered and
    /// forwarded once, without ACKs or clean-up.
    shed,
    /// Origin signatures checked (first copies the seen-set had room for).
    verified,
    /// Clean-up copies whose window this node had not asked their sender for: delivered if
    /// new, but no window is covered for them.
    unasked_windows,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_reads_the_counter_its_json_key_names() {
        for f in Stats::FIELDS {
            let one: Stats = serde_json::from_str(&format!("{{\"{}\": 1}}", f.name())).unwrap();
            let set: Vec<_> = Stats::FIELDS
                .iter()
                .filter(|g| g.get(&one) == 1)
                .map(StatsField::name)
                .collect();
            assert_eq!(set, [f.name()]);
            let mut two = one.clone();
            two.add(&one);
            assert_eq!(two.since(&one), one);
            assert_eq!(one.since(&two), Stats::default());
            let help = f.help();
            assert!(
                !help.is_empty() && !help.ends_with('.') && !help.contains("  "),
                "{}: {help:?}",
                f.name()
            );
        }
    }
}
