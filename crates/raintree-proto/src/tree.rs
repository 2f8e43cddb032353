//! Target selection for the two trees (SPEC 2 and 3), in exact integer arithmetic.
//!
//! Offsets are indices into a node's view: offset 0 is the node itself and is never sent to.

use crate::wire::Strategy;

/// Max level `L` for `n` peers: 0 for `n <= 1`, else the smallest `L` with `3^L >= n`.
pub fn max_level(n: u64) -> u32 {
    let mut level = 0u32;
    let mut pow: u128 = 1;
    while pow < u128::from(n) {
        pow *= 3;
        level += 1;
    }
    level
}

/// The reference target range `s(l) = floor(n * 2^k / 3^k)` with `k = L - l` (SPEC 2).
///
/// Levels above `L` are treated as `L`; level 0 has range 0. Exact because `n < 2^64` gives
/// `L <= 41`, so `k <= 40`, `n * 2^k < 2^104` and `3^k < 2^64` both fit in `u128`.
pub fn reference_range(n: u64, level: u32) -> u64 {
    let big_l = max_level(n);
    if level == 0 || big_l == 0 {
        return 0;
    }
    let k = big_l - level.min(big_l);
    let num = u128::from(n) << k;
    let den = 3u128.pow(k);
    // The quotient is at most `n`, so it fits back into a u64.
    u64::try_from(num / den).unwrap_or(n)
}

/// The two reference target offsets of level `level` for `n` peers: `floor(s/3)`, `floor(2s/3)`.
pub fn reference_targets(n: u64, level: u32) -> [u64; 2] {
    let s = u128::from(reference_range(n, level));
    // Both are at most `s <= n`, so they fit back into a u64.
    [(s / 3) as u64, (2 * s / 3) as u64]
}

/// The sizes of the three consecutive parts of a range of length `r`, larger parts first.
pub fn exact_parts(r: u64) -> [u64; 3] {
    let (q, rem) = (r / 3, r % 3);
    [q + u64::from(rem > 0), q + u64::from(rem > 1), q]
}

/// What a node owning `[0, r)` sends under the exact strategy: `(offset, range)` per receiver.
///
/// Parts of size 0 get no send. The node itself keeps the first part.
pub fn exact_delegations(r: u64) -> impl Iterator<Item = (u64, u64)> {
    let [a, b, c] = exact_parts(r);
    [(a, b), (a + b, c)]
        .into_iter()
        .filter(move |&(_, len)| r > 1 && len > 0)
}

/// The largest range a correct sender at offset `s` of the originator's view can give the node
/// at offset `x` of that view, in a network of `n` (exact strategy, same peer list).
///
/// Walks the partition tree from the originator down to `x`. A sender that delegated a part
/// containing `x` (an ancestor of `x`) may hand `x` at most the rest of that part: exactly
/// `x`'s own range for its parent, more for a higher ancestor re-splitting a failed part.
/// Anyone else can only be re-delegating inside a failed part, all of which lies within the
/// originator's own delegation that contains `x`. `x = 0` (the originator) gets `n`.
pub fn exact_range_bound(n: u64, x: u64, s: u64) -> u64 {
    if x == 0 || x >= n {
        return n;
    }
    let (mut owner, mut r) = (0u64, n);
    let mut top_end = None;
    'walk: loop {
        let mut rr = r;
        while rr > 1 {
            for (off, len) in exact_delegations(rr) {
                let (start, end) = (owner + off, owner + off + len);
                if (start..end).contains(&x) {
                    let top = *top_end.get_or_insert(end);
                    if owner == s {
                        return end - x;
                    }
                    if start == x {
                        return top - x;
                    }
                    owner = start;
                    r = len;
                    continue 'walk;
                }
            }
            rr = exact_parts(rr)[0];
        }
        // Unreachable for 0 < x < n: every such offset heads some delegated part.
        return n - x;
    }
}

/// One row of a node's sending plan (what `raintree targets` prints).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlanRow {
    /// Level, from `L` down to 1.
    pub level: u32,
    /// The range `s` (reference) or the range owned at this step (exact).
    pub range: u64,
    /// The two target offsets; 0 means self (nothing sent).
    pub targets: [u64; 2],
}

/// The plan of the originator at view position 0 for `n` peers, one row per level `L..=1`.
pub fn originator_plan(strategy: Strategy, n: u64) -> Vec<PlanRow> {
    let big_l = max_level(n);
    match strategy {
        Strategy::Reference => (1..=big_l)
            .rev()
            .map(|level| PlanRow {
                level,
                range: reference_range(n, level),
                targets: reference_targets(n, level),
            })
            .collect(),
        Strategy::Exact => {
            let mut rows = Vec::new();
            let mut r = n;
            for level in (1..=big_l).rev() {
                let [a, b, c] = exact_parts(r);
                let t1 = if b > 0 { a } else { 0 };
                let t2 = if c > 0 { a + b } else { 0 };
                rows.push(PlanRow {
                    level,
                    range: r,
                    targets: [t1, t2],
                });
                r = a;
            }
            rows
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

    /// Every node's parent and range in the failure-free exact tree from offset 0.
    fn exact_tree(n: u64) -> Vec<(u64, u64)> {
        fn assign(owner: u64, r: u64, out: &mut Vec<(u64, u64)>) {
            let mut rr = r;
            while rr > 1 {
                for (off, len) in exact_delegations(rr) {
                    out[(owner + off) as usize] = (owner, len);
                    assign(owner + off, len, out);
                }
                rr = exact_parts(rr)[0];
            }
        }
        let mut out = vec![(0, n); n as usize];
        assign(0, n, &mut out);
        out
    }

    #[test]
    fn range_bound_is_exact_for_the_parent_and_looser_only_for_ancestors() {
        for n in 1..=200u64 {
            let tree = exact_tree(n);
            for x in 1..n {
                let (parent, range) = tree[x as usize];
                assert_eq!(exact_range_bound(n, x, parent), range, "n={n} x={x}");
                // Ancestors above the parent may re-delegate more, never past the originator's
                // view; no sender gets a bound below the range of the part x heads.
                let mut a = parent;
                while a != 0 {
                    a = tree[a as usize].0;
                    let b = exact_range_bound(n, x, a);
                    assert!(b >= range && b <= n - x, "n={n} x={x} ancestor {a}: {b}");
                }
                for s in 0..n {
                    assert!(exact_range_bound(n, x, s) <= n - x);
                }
            }
        }
    }

    /// `floor(n * 2^k / 3^k)` on little-endian base-2^32 limbs: an independent big-number check.
    fn big_range(n: u64, k: u32) -> u64 {
        let mut limbs: Vec<u64> = vec![n & 0xffff_ffff, n >> 32];
        for _ in 0..k {
            let mut carry = 0u64;
            for l in limbs.iter_mut() {
                let v = *l * 2 + carry;
                *l = v & 0xffff_ffff;
                carry = v >> 32;
            }
            if carry > 0 {
                limbs.push(carry);
            }
        }
        for _ in 0..k {
            let mut rem = 0u64;
            for l in limbs.iter_mut().rev() {
                let v = (rem << 32) | *l;
                *l = v / 3;
                rem = v % 3;
            }
        }
        assert!(limbs[2..].iter().all(|&l| l == 0));
        limbs[0] | (limbs[1] << 32)
    }

    #[test]
    fn max_levels() {
        let cases = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 1),
            (4, 2),
            (9, 2),
            (10, 3),
            (27, 3),
        ];
        for (n, l) in cases {
            assert_eq!(max_level(n), l, "n={n}");
        }
        assert_eq!(max_level(177_147), 11);
        assert_eq!(max_level(177_148), 12);
        assert_eq!(max_level(u64::MAX), 41);
    }

    #[test]
    fn floats_lose_what_integers_keep() {
        // SPEC 2: binary64 gives 23 for 81*(2/3)^3; the exact value is 24.
        assert_eq!(reference_range(81, 1), 24);
        assert_eq!(reference_targets(4, 2), [1, 2]);
        assert_eq!(reference_targets(4, 1), [0, 1]);
    }

    #[test]
    fn huge_networks_do_not_overflow() {
        for n in [u64::MAX, u64::MAX - 1, 3u64.pow(40), 3u64.pow(40) + 1] {
            for level in 1..=max_level(n) {
                let k = max_level(n) - level;
                assert_eq!(
                    reference_range(n, level),
                    big_range(n, k),
                    "n={n} l={level}"
                );
            }
        }
    }

    #[test]
    fn exact_parts_are_balanced() {
        assert_eq!(exact_parts(1), [1, 0, 0]);
        assert_eq!(exact_parts(2), [1, 1, 0]);
        assert_eq!(exact_parts(4), [2, 1, 1]);
        assert_eq!(exact_parts(5), [2, 2, 1]);
        assert_eq!(exact_delegations(1).count(), 0);
        assert_eq!(exact_delegations(2).collect::<Vec<_>>(), vec![(1, 1)]);
        assert_eq!(
            exact_delegations(5).collect::<Vec<_>>(),
            vec![(2, 2), (4, 1)]
        );
    }

    /// Walks the exact tree from offset 0 and counts how often each offset is reached.
    fn exact_reach(n: u64) -> (Vec<u32>, u64, u32) {
        let mut reached = vec![0u32; n as usize];
        reached[0] = 1;
        let (mut sends, mut depth) = (0u64, 0u32);
        let mut stack = vec![(0u64, n, 0u32)];
        while let Some((start, mut r, hops)) = stack.pop() {
            while r > 1 {
                for (off, len) in exact_delegations(r) {
                    reached[(start + off) as usize] += 1;
                    sends += 1;
                    depth = depth.max(hops + 1);
                    stack.push((start + off, len, hops + 1));
                }
                r = exact_parts(r)[0];
            }
        }
        (reached, sends, depth)
    }

    #[test]
    fn exact_reaches_everyone_once_up_to_2000() {
        for n in 1..=2000u64 {
            let (reached, sends, depth) = exact_reach(n);
            assert!(reached.iter().all(|&c| c == 1), "n={n}");
            assert_eq!(sends, n - 1, "n={n}");
            assert!(depth <= max_level(n), "n={n}");
        }
    }

    #[test]
    fn plans_from_position_zero() {
        let rows = originator_plan(Strategy::Reference, 12);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            PlanRow {
                level: 3,
                range: 12,
                targets: [4, 8]
            }
        );
        assert_eq!(rows[2].range, 5);
        let exact = originator_plan(Strategy::Exact, 12);
        assert_eq!(exact[0].targets, [4, 8]);
        assert_eq!(exact[1].range, 4);
        assert_eq!(exact[2].targets, [1, 0]);
    }

    proptest! {
        #[test]
        fn u128_range_matches_big_numbers(n in any::<u64>()) {
            let big_l = max_level(n);
            for level in 1..=big_l {
                prop_assert_eq!(reference_range(n, level), big_range(n, big_l - level));
            }
        }

        #[test]
        fn exact_reaches_everyone_once(n in 1u64..20_000) {
            let (reached, sends, _) = exact_reach(n);
            prop_assert!(reached.iter().all(|&c| c == 1));
            prop_assert_eq!(sends, n - 1);
        }
    }
}
