//! The address sequences of the measured workloads, taken from `compromis_workload` itself so the
//! hardware runs the same accesses as `compromis sim` with the same seed and footprint.
//!
//! - gups: the byte offsets (in the table) of the first `updates` read-modify-writes of the
//!   stream; the guest reads them from an index array (one sequential 8-byte load per update,
//!   which the hardware prefetcher serves) instead of running the ChaCha8 generator itself.
//! - pointer-chase: the successor of every node in the seeded random cycle, so the VMM can lay
//!   the linked list out in memory; the chase starts at the stream's first node.

use compromis_types::{AccessKind, ByteSize, Op};
use compromis_workload::{WorkloadError, WorkloadKind, WorkloadSpec, build};

/// Node size of pointer-chase (bytes).
pub const NODE: u64 = 64;

/// Stream ops per data iteration: gups is fetch + load + store, pointer-chase fetch + 2 loads.
pub const OPS_PER_ITERATION: u64 = 3;

/// The spec `compromis sim` uses for `iterations` updates/nodes of `kind` over `footprint`.
pub fn spec(kind: WorkloadKind, footprint: ByteSize, iterations: u64, seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        kind,
        footprint,
        accesses: iterations * OPS_PER_ITERATION,
        processes: 1,
        quantum: 100_000,
        seed,
    }
}

/// The data region of a single-process workload: `(start gVA, len)` of its second `Op::Map`.
fn data_region(ops: &mut dyn Iterator<Item = Op>) -> Option<(u64, u64)> {
    let mut maps = 0;
    for op in ops {
        if let Op::Map { start, len } = op {
            maps += 1;
            if maps == 2 {
                return Some((start.0, len));
            }
        }
    }
    None
}

/// The gups stream: table length in bytes and the byte offset of each update.
pub fn gups(
    footprint: ByteSize,
    updates: u64,
    seed: u64,
) -> Result<(u64, Vec<u64>), WorkloadError> {
    let mut ops = build(&spec(WorkloadKind::Gups, footprint, updates, seed))?;
    let (start, len) = data_region(&mut ops).unwrap_or((0, footprint.bytes()));
    let offsets = ops
        .filter_map(|op| match op {
            Op::Access {
                gva,
                kind: AccessKind::Load,
                ..
            } => Some(gva.0 - start),
            _ => None,
        })
        .collect();
    Ok((len, offsets))
}

/// The pointer-chase cycle: pool length in bytes, the first node, and `succ[i]`, the node after
/// node `i` (one full cycle of the stream, so every node has its successor).
pub fn chase(footprint: ByteSize, seed: u64) -> Result<(u64, u32, Vec<u32>), WorkloadError> {
    let probe = build(&spec(WorkloadKind::PointerChase, footprint, 1, seed))?;
    let (_, len) = {
        let mut p = probe;
        data_region(&mut p).unwrap_or((0, footprint.bytes()))
    };
    let nodes = len / NODE;
    let mut ops = build(&spec(WorkloadKind::PointerChase, footprint, nodes, seed))?;
    let (start, _) = data_region(&mut ops).unwrap_or((0, len));
    let to_node = |gva: u64| u32::try_from((gva - start) / NODE).unwrap_or(u32::MAX);
    let mut succ = vec![u32::MAX; usize::try_from(nodes).unwrap_or(0)];
    let mut first = None;
    let mut prev: Option<u32> = None;
    // Each node is fetch, load of `val` (offset 8), load of `next` (offset 0): take the latter.
    for op in ops {
        if let Op::Access {
            gva,
            kind: AccessKind::Load,
            ..
        } = op
            && (gva.0 - start) % NODE == 0
        {
            let n = to_node(gva.0);
            if let Some(p) = prev {
                succ[p as usize] = n;
            }
            first.get_or_insert(n);
            prev = Some(n);
        }
    }
    let first = first.unwrap_or(0);
    if let Some(p) = prev {
        succ[p as usize] = first;
    }
    Ok((len, first, succ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gups_offsets_are_in_the_table_and_word_aligned() {
        let (len, off) = gups(ByteSize::mib(4), 1000, 42).unwrap();
        assert_eq!(off.len(), 1000);
        assert!(off.iter().all(|&o| o < len && o % 8 == 0));
        assert_eq!(off, gups(ByteSize::mib(4), 1000, 42).unwrap().1);
    }

    #[test]
    fn chase_is_one_cycle_through_every_node() {
        let (len, first, succ) = chase(ByteSize::mib(1), 7).unwrap();
        assert_eq!(succ.len() as u64, len / NODE);
        let mut seen = vec![false; succ.len()];
        let mut n = first;
        for _ in 0..succ.len() {
            assert!(!seen[n as usize]);
            seen[n as usize] = true;
            n = succ[n as usize];
        }
        assert_eq!(n, first);
    }
}
