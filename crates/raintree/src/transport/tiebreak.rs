//! The simultaneous-dial tie-break: which of two connections to one peer serves it.
//!
//! Both peers apply the same rule to the same pair of connections, so both keep the same one
//! whatever order the connections finished their handshakes in.

use raintree_proto::Address;

/// Whether a new connection dialled by `new_dialer` replaces the current one, dialled by
/// `current_dialer` (`None`: nothing serves the peer yet). Of two connections dialled by
/// different sides the one dialled by the lower address stays; of two dialled by the same
/// side the newer stays (the older one is a leftover from before a redial).
pub(crate) fn new_wins(current_dialer: Option<Address>, new_dialer: Address) -> bool {
    match current_dialer {
        None => true,
        Some(cur) if cur == new_dialer => true,
        Some(cur) => new_dialer < cur,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOW: Address = Address([1; 20]);
    const HIGH: Address = Address([9; 20]);

    /// The dialer of the connection a side keeps after seeing the two connections in `order`.
    fn kept(order: [Address; 2]) -> Address {
        let mut current = None;
        for dialer in order {
            if new_wins(current, dialer) {
                current = Some(dialer);
            }
        }
        current.unwrap()
    }

    #[test]
    fn first_connection_always_serves() {
        assert!(new_wins(None, LOW));
        assert!(new_wins(None, HIGH));
    }

    #[test]
    fn the_lower_dialer_wins_whatever_the_order() {
        assert_eq!(kept([LOW, HIGH]), LOW);
        assert_eq!(kept([HIGH, LOW]), LOW);
        assert!(!new_wins(Some(LOW), HIGH));
        assert!(new_wins(Some(HIGH), LOW));
    }

    #[test]
    fn both_sides_keep_the_same_connection() {
        // Side LOW sees its own dial finish first, side HIGH sees its own first: the usual
        // simultaneous-dial race. Each side's outcome must name the same connection.
        let at_low = kept([LOW, HIGH]);
        let at_high = kept([HIGH, LOW]);
        assert_eq!(at_low, at_high);
    }

    #[test]
    fn a_redial_by_the_same_side_replaces_the_old_connection() {
        assert!(new_wins(Some(HIGH), HIGH));
        assert!(new_wins(Some(LOW), LOW));
    }
}
