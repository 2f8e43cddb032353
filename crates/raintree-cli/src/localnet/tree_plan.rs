//! The exact strategy's planned tree of one broadcast, from `raintree_proto::tree`: which node
//! should send to which, so the HTML page can draw edges the deliveries alone do not record.

use raintree_proto::tree;

/// Planned parent offset and depth per view offset from the originator (offset 0 is the
/// originator: no parent, depth 0).
pub fn exact_plan(n: usize) -> Vec<(Option<usize>, u32)> {
    let mut plan = vec![(None, 0u32); n];
    // (owner offset, range it owns, owner depth); the owner keeps the first part of its range
    // and goes on splitting it, at the same depth, after delegating the other two parts.
    let mut work = vec![(0usize, n as u64, 0u32)];
    while let Some((owner, r, depth)) = work.pop() {
        for (off, len) in tree::exact_delegations(r) {
            let child = owner + off as usize;
            plan[child] = (Some(owner), depth + 1);
            work.push((child, len, depth + 1));
        }
        let keep = tree::exact_parts(r)[0];
        if keep > 1 && keep < r {
            work.push((owner, keep, depth));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_has_one_parent_and_depth_is_at_most_log3() {
        for n in [2usize, 3, 9, 27, 28, 81, 100] {
            let plan = exact_plan(n);
            assert_eq!(plan[0], (None, 0));
            let max_depth = plan.iter().map(|p| p.1).max().unwrap();
            // ceil(log3 n) levels bound the depth; a power of three needs every one of them.
            assert!(max_depth <= tree::max_level(n as u64), "n = {n}");
            if [3, 9, 27, 81].contains(&n) {
                assert_eq!(max_depth, tree::max_level(n as u64), "n = {n}");
            }
            for (i, (parent, depth)) in plan.iter().enumerate().skip(1) {
                let p = parent.unwrap_or_else(|| panic!("n = {n}: node {i} unreached"));
                assert!(p < i, "a range's owner precedes it");
                assert_eq!(plan[p].1 + 1, *depth);
            }
        }
    }
}
