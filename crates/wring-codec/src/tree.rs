//! Adaptive wavelet packet trees: which subbands are split again. A node at depth `d` with index `i`
//! (its path's band digits, the first split's digit most significant) is the band `i` of the full packet
//! transform's level `d`; a split node's children are `k * i + b` for band `b` (0 lowpass; in 2-D 1, 2, 3
//! are pywavelets' h, v and d). The full packet tree and the dyadic (Mallat) tree are the two extremes;
//! the encoder picks the tree in between that costs least (Coifman and Wickerhauser's best-basis search,
//! with a rate-distortion cost as in Ramchandran and Vetterli).

use std::collections::HashSet;

use crate::CodecError;

/// One node, in preorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Depth (0 is the signal itself).
    pub depth: usize,
    /// Index among the full packet transform's bands at this depth.
    pub index: usize,
    /// Whether the node is split (a leaf otherwise).
    pub split: bool,
}

/// A packet tree of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// Children per split: 2 (1-D) or 4 (2-D).
    pub arity: usize,
    /// The deepest level a leaf may sit at.
    pub max_depth: usize,
    nodes: Vec<Node>,
    leaves: HashSet<(usize, usize)>,
}

impl Tree {
    fn from_nodes(arity: usize, max_depth: usize, nodes: Vec<Node>) -> Tree {
        let leaves = nodes
            .iter()
            .filter(|n| !n.split)
            .map(|n| (n.depth, n.index))
            .collect();
        Tree {
            arity,
            max_depth,
            nodes,
            leaves,
        }
    }

    /// The tree whose nodes split exactly where `split(depth, index)` says (leaves at `max_depth` always).
    pub fn from_fn(arity: usize, max_depth: usize, split: impl Fn(usize, usize) -> bool) -> Tree {
        fn rec(
            d: usize,
            i: usize,
            k: usize,
            max: usize,
            split: &dyn Fn(usize, usize) -> bool,
            out: &mut Vec<Node>,
        ) {
            let s = d < max && split(d, i);
            out.push(Node {
                depth: d,
                index: i,
                split: s,
            });
            if s {
                for b in 0..k {
                    rec(d + 1, k * i + b, k, max, split, out);
                }
            }
        }
        let mut nodes = Vec::new();
        rec(0, 0, arity, max_depth, &split, &mut nodes);
        Tree::from_nodes(arity, max_depth, nodes)
    }

    /// The dyadic (Mallat) tree: only the lowpass band is split, down to `max_depth`.
    pub fn dyadic(arity: usize, max_depth: usize) -> Tree {
        Tree::from_fn(arity, max_depth, |_, i| i == 0)
    }

    /// The full packet tree: every band split down to `max_depth`.
    pub fn full(arity: usize, max_depth: usize) -> Tree {
        Tree::from_fn(arity, max_depth, |_, _| true)
    }

    /// The tree of least total cost, where `cost(depth, index)` is the cost of coding that node as a leaf
    /// (non-negative) and `split_cost` is added for every split. Subtrees are abandoned as soon as their
    /// partial cost passes the node's own.
    pub fn best(
        arity: usize,
        max_depth: usize,
        split_cost: f64,
        cost: &mut dyn FnMut(usize, usize) -> f64,
    ) -> Tree {
        #[allow(
            clippy::too_many_arguments,
            reason = "a recursive helper's state, passed down unchanged"
        )]
        fn rec(
            d: usize,
            i: usize,
            k: usize,
            max: usize,
            split_cost: f64,
            cost: &mut dyn FnMut(usize, usize) -> f64,
            out: &mut Vec<Node>,
        ) -> f64 {
            let leaf = cost(d, i);
            let mark = out.len();
            if d < max {
                out.push(Node {
                    depth: d,
                    index: i,
                    split: true,
                });
                let mut sum = split_cost;
                let mut complete = true;
                for b in 0..k {
                    sum += rec(d + 1, k * i + b, k, max, split_cost, cost, out);
                    if sum >= leaf {
                        complete = false;
                        break;
                    }
                }
                if complete {
                    return sum;
                }
                out.truncate(mark);
            }
            out.push(Node {
                depth: d,
                index: i,
                split: false,
            });
            leaf
        }
        let mut nodes = Vec::new();
        rec(0, 0, arity, max_depth, split_cost, cost, &mut nodes);
        Tree::from_nodes(arity, max_depth, nodes)
    }

    /// The leaves in coding order: depth first, the lowpass child first, so that a band's parent (the
    /// same band of its lowpass sibling's children, see [`Tree::parent`]) comes before it.
    pub fn leaves(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.nodes
            .iter()
            .filter(|n| !n.split)
            .map(|n| (n.depth, n.index))
    }

    /// Whether (depth, index) is a leaf.
    pub fn is_leaf(&self, depth: usize, index: usize) -> bool {
        self.leaves.contains(&(depth, index))
    }

    /// The leaf one scale coarser with the same last band: for the band s·o (o not lowpass), the band
    /// s·a·o, when it is a leaf. In a dyadic tree this is the classic parent (HL2 of HL1).
    pub fn parent(&self, depth: usize, index: usize) -> Option<(usize, usize)> {
        let k = self.arity;
        let o = index % k;
        if depth == 0 || o == 0 {
            return None;
        }
        let s = index / k;
        let p = (depth + 1, (s * k) * k + o);
        self.is_leaf(p.0, p.1).then_some(p)
    }

    /// Whether a leaf is the lowpass band of every split above it (coded with spatial prediction).
    pub fn is_lowpass(index: usize) -> bool {
        index == 0
    }

    /// The split flags in preorder, one per node above `max_depth`.
    pub fn write(&self, out: &mut BitWriter) {
        for n in &self.nodes {
            if n.depth < self.max_depth {
                out.push(n.split);
            }
        }
    }

    /// Reads what [`Tree::write`] wrote. Every flag read consumes a bit of the stream, and every split
    /// adds at most `arity` leaves, so a hostile stream's tree is bounded by its length.
    pub fn read(arity: usize, max_depth: usize, r: &mut BitReader<'_>) -> Result<Tree, CodecError> {
        let mut nodes = Vec::new();
        // An explicit stack of (depth, index) in reverse order of visit.
        let mut stack = vec![(0usize, 0usize)];
        while let Some((d, i)) = stack.pop() {
            let split = d < max_depth && r.bit()?;
            nodes.push(Node {
                depth: d,
                index: i,
                split,
            });
            if split {
                for b in (0..arity).rev() {
                    stack.push((d + 1, arity * i + b));
                }
            }
        }
        Ok(Tree::from_nodes(arity, max_depth, nodes))
    }

    /// Leaves in the tree.
    pub fn leaf_count(&self) -> usize {
        self.leaves.len()
    }

    /// The deepest leaf.
    pub fn depth(&self) -> usize {
        self.leaves().map(|(d, _)| d).max().unwrap_or(0)
    }

    /// A one-line picture of the tree: the number of leaves at each depth.
    pub fn describe(&self) -> String {
        let mut per = vec![0usize; self.max_depth + 1];
        for (d, _) in self.leaves() {
            per[d] += 1;
        }
        per.iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(d, n)| format!("{n}@{d}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Packs bits, most significant first.
#[derive(Debug, Default)]
pub struct BitWriter {
    /// The bytes so far.
    pub bytes: Vec<u8>,
    used: u32,
}

impl BitWriter {
    /// Appends a bit.
    pub fn push(&mut self, bit: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if bit {
            *self.bytes.last_mut().expect("pushed") |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }
}

/// Reads what [`BitWriter`] packed.
#[derive(Debug)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> BitReader<'a> {
    /// Bits from `bytes`.
    pub fn new(bytes: &'a [u8]) -> BitReader<'a> {
        BitReader { bytes, at: 0 }
    }

    /// The next bit, or an error past the end.
    pub fn bit(&mut self) -> Result<bool, CodecError> {
        let byte = self
            .bytes
            .get(self.at / 8)
            .ok_or_else(|| CodecError::Corrupt("the stream is truncated (packet tree)".into()))?;
        let b = byte & (0x80 >> (self.at % 8)) != 0;
        self.at += 1;
        Ok(b)
    }

    /// Whole bytes consumed (a partly read byte counts).
    pub fn bytes_used(&self) -> usize {
        self.at.div_ceil(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_round_trip_and_order_parents_first() {
        for t in [
            Tree::dyadic(4, 5),
            Tree::full(4, 3),
            Tree::from_fn(4, 4, |d, i| {
                i == 0 || (d == 1 && i == 3) || (d == 2 && i == 13)
            }),
            Tree::dyadic(2, 9),
            Tree::full(2, 0),
        ] {
            let mut w = BitWriter::default();
            t.write(&mut w);
            let back = Tree::read(t.arity, t.max_depth, &mut BitReader::new(&w.bytes)).unwrap();
            assert_eq!(back, t);
            let order: Vec<_> = t.leaves().collect();
            for (pos, &(d, i)) in order.iter().enumerate() {
                if let Some(p) = t.parent(d, i) {
                    let at = order.iter().position(|&l| l == p).unwrap();
                    assert!(at < pos, "parent {p:?} of {:?} comes after it", (d, i));
                }
            }
        }
        let d = Tree::dyadic(4, 3);
        assert_eq!(d.leaf_count(), 10);
        assert_eq!(d.parent(1, 1), Some((2, 1)));
        assert_eq!(d.parent(3, 1), None);
        assert_eq!(Tree::full(4, 2).leaf_count(), 16);
        // A truncated tree is an error.
        assert!(Tree::read(4, 6, &mut BitReader::new(&[0xff])).is_err());
    }

    #[test]
    fn the_best_tree_follows_the_costs() {
        // Splitting pays only for band 2's subtree at depth 1.
        let t = Tree::best(4, 3, 0.0, &mut |d, i| match (d, i) {
            (0, 0) => 100.0,
            (1, 2) => 50.0,
            (1, _) => 10.0,
            (2, _) => 5.0,
            _ => 100.0,
        });
        assert_eq!(t.describe(), "3@1 4@2");
        assert!(t.is_leaf(2, 8) && t.is_leaf(1, 0));
    }
}
