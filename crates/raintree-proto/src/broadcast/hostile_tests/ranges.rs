//! Inflated ranges and re-delegations of the exact tree.

use super::*;

/// Runs node 0's exact broadcast over `n` nodes without ACKs; returns the network, each tree
/// copy's `(from, to, range)` and the first copy node 0 sent (a template for injected copies).
fn exact_tree_run(n: usize) -> (Net, Vec<(usize, usize, u32)>, Gossip) {
    let mut net = Net::new(
        n,
        Config {
            acks: false,
            ..exact()
        },
    );
    net.engines[0]
        .broadcast(T0, Bytes::from_static(b"block"), 1)
        .unwrap();
    net.drain(0);
    let mut copies = Vec::new();
    let mut template = None;
    while let Some((from, to, m)) = net.queue.pop_front() {
        if let BroadcastMessage::Gossip(g) = &m {
            copies.push((from, to, g.level_or_range));
            template.get_or_insert_with(|| g.clone());
        }
        let a = net.list.get(from).unwrap();
        net.engines[to].handle_message(T0, a, m).unwrap();
        net.drain(to);
    }
    (net, copies, template.unwrap())
}

/// The tree copies `e` sent: `(view offset from `me`, range)`.
fn sent_ranges(e: &mut Engine, list: &PeerList, me: usize) -> Vec<(usize, u32)> {
    let n = list.len();
    outputs(e)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                message: BroadcastMessage::Gossip(c),
            } => Some(((list.position(&to).unwrap() + n - me) % n, c.level_or_range)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_inflated_range_from_the_parent_is_cut_to_the_part_it_could_give() {
    let (net, copies, _) = exact_tree_run(27);
    let (parent, x, range) = *copies.iter().find(|c| c.0 != 0 && c.2 > 1).unwrap();
    // The run without ACKs sent only ranges a correct parent sends: none was cut.
    assert!(net.engines.iter().all(|e| e.stats().impossible == 0));
    let mut fresh = Net::new(
        27,
        Config {
            acks: false,
            ..exact()
        },
    );
    let real = first_copy(&mut fresh, b"block");
    let from = fresh.list.get(parent).unwrap();
    let list = fresh.list.clone();
    let e = &mut fresh.engines[x];
    let inflated = Gossip {
        level_or_range: 27 - x as u32,
        ..real.clone()
    };
    e.handle_message(T0, from, BroadcastMessage::Gossip(inflated.clone()))
        .unwrap();
    assert_eq!(e.stats().impossible, 1);
    assert_eq!(e.stats().deliveries, 1);
    let outs: Vec<Output> = outputs(e);
    assert!(outs.contains(&Output::Misbehaved {
        peer: from,
        reason: Misbehaviour::ImpossibleRange
    }));
    // Forwarded exactly its own part, as from a correct parent.
    let handed: u32 = outs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                message: BroadcastMessage::Gossip(c),
                ..
            } => Some(c.level_or_range),
            _ => None,
        })
        .sum();
    assert_eq!(handed, range - 1);
    // Again and again: nothing new, whatever the range.
    for r in [range + 1, 26 - x as u32] {
        let g = Gossip {
            level_or_range: r,
            ..real.clone()
        };
        e.handle_message(T0, from, BroadcastMessage::Gossip(g))
            .unwrap();
        assert!(sent_ranges(e, &list, x).is_empty());
    }
}

#[test]
fn a_re_delegation_forwards_only_the_new_part() {
    let n = 40;
    let (mut net, copies, template) = exact_tree_run(n);
    // A node whose parent is not the originator: the originator re-splitting a failed part
    // above it may legitimately give it more than its own range.
    let (x, range, bound) = copies
        .iter()
        .filter(|c| c.0 != 0)
        .map(|&(_, x, r)| {
            let b = crate::tree::exact_range_bound(n as u64, x as u64, 0) as u32;
            (x, r, b)
        })
        .find(|&(_, r, b)| b > r + 3)
        .unwrap();
    let from = net.list.get(0).unwrap();
    let list = net.list.clone();
    let e = &mut net.engines[x];
    // More than even the originator could give: cut to the bound.
    let g = Gossip {
        level_or_range: bound + 1,
        ..template.clone()
    };
    e.handle_message(T0, from, BroadcastMessage::Gossip(g.clone()))
        .unwrap();
    assert_eq!(e.stats().impossible, 1);
    let sent = sent_ranges(e, &list, x);
    for &(off, r) in &sent {
        assert!(off >= range as usize, "offset {off} was already covered");
        assert!(off + r as usize <= bound as usize);
    }
    // Exactly the new part, once; a re-split from scratch would hand out `bound - 1`.
    assert_eq!(sent.iter().map(|s| s.1).sum::<u32>(), bound - range);
    // The same copy again is nothing new.
    e.handle_message(T0, from, BroadcastMessage::Gossip(g))
        .unwrap();
    assert!(sent_ranges(e, &list, x).is_empty());
}
