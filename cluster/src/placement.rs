//! Rendezvous (highest-random-weight) placement of blocks over nodes.
//!
//! Each (node, block) pair gets a pseudo-random 64-bit weight; a block's
//! replicas are the `r` nodes of highest weight. Every client computes the
//! same answer from the same membership, with no table to share, and when a
//! node joins or leaves only the blocks whose top `r` it enters or leaves
//! move: about `r / n` of them.
//!
//! The weight mixes a node's seed (BLAKE3 of its id, computed once) with the
//! first 8 bytes of the block's chain hash (already uniform: a BLAKE3
//! output) through the SplitMix64 finaliser, so placing a block over `n`
//! nodes costs `n` multiply-xor rounds.

/// A node as placement sees it: its id's 64-bit seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeSeed(pub u64);

impl NodeSeed {
    /// The seed of node `id`.
    pub fn of(id: &str) -> NodeSeed {
        let digest = blake3::derive_key("pagoda rendezvous node v1", id.as_bytes());
        NodeSeed(u64::from_le_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ]))
    }
}

/// The 64-bit placement key of a 32-byte block key (its first 8 bytes).
pub fn block_word(key: &[u8; 32]) -> u64 {
    u64::from_le_bytes([
        key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
    ])
}

/// The weight of `node` for `block`.
pub fn weight(node: NodeSeed, block: u64) -> u64 {
    // SplitMix64's finaliser (Steele, Lea and Flood 2014).
    let mut z = node.0 ^ block;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Indices into `nodes` of the `r` replicas of `block`, best first (fewer
/// when there are fewer nodes).
pub fn replicas(nodes: &[NodeSeed], block: u64, r: usize) -> Vec<usize> {
    let mut best: Vec<(u64, usize)> = Vec::with_capacity(r + 1);
    for (index, node) in nodes.iter().enumerate() {
        let w = weight(*node, block);
        if best.len() < r || best.last().is_some_and(|(last, _)| w > *last) {
            let at = best.partition_point(|(other, _)| *other >= w);
            best.insert(at, (w, index));
            best.truncate(r);
        }
    }
    best.into_iter().map(|(_, index)| index).collect()
}

/// Every node of `nodes`, best first for `block` (the read order: replicas
/// first, then the nodes that would inherit the block).
pub fn ranked(nodes: &[NodeSeed], block: u64) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (weight(*node, block), index))
        .collect();
    order.sort_unstable_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    order.into_iter().map(|(_, index)| index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeSeed> {
        (0..n).map(|i| NodeSeed::of(&format!("node-{i}"))).collect()
    }

    fn block(i: u64) -> u64 {
        block_word(blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    #[test]
    fn replicas_are_the_top_weights_and_distinct() {
        let all = nodes(10);
        for i in 0..200 {
            let chosen = replicas(&all, block(i), 3);
            assert_eq!(chosen.len(), 3);
            assert_eq!(chosen, ranked(&all, block(i))[..3]);
        }
        assert_eq!(replicas(&all[..2], block(1), 3).len(), 2);
        assert!(replicas(&[], block(1), 3).is_empty());
    }

    #[test]
    #[expect(clippy::cast_precision_loss, reason = "ratios")]
    fn load_is_balanced_and_a_leaving_node_moves_only_its_blocks() {
        let all = nodes(16);
        let blocks = 32_000u64;
        let mut load = [0u32; 16];
        let mut moved = 0;
        for i in 0..blocks {
            let before = replicas(&all, block(i), 2);
            for index in &before {
                load[*index] += 1;
            }
            // Node 5 leaves: a block moves only if node 5 held it.
            let mut rest = all.clone();
            rest.remove(5);
            let after: Vec<NodeSeed> = replicas(&rest, block(i), 2)
                .into_iter()
                .map(|index| rest[index])
                .collect();
            let before: Vec<NodeSeed> = before.into_iter().map(|index| all[index]).collect();
            if before.contains(&all[5]) {
                moved += 1;
                assert!(after.contains(&before[usize::from(before[0] == all[5])]));
            } else {
                assert_eq!(before, after, "block {i} moved without reason");
            }
        }
        let mean = f64::from(load.iter().sum::<u32>()) / 16.0;
        let max = f64::from(*load.iter().max().unwrap_or(&0));
        assert!(max / mean < 1.1, "max/mean {}", max / mean);
        let share = f64::from(moved) / blocks as f64;
        assert!((share - 2.0 / 16.0).abs() < 0.01, "moved {share}");
    }
}
