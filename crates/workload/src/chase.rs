//! `pointer-chase`: a linked list of 64-byte nodes forming one random cycle through the whole
//! footprint (the pointer-chasing microbenchmark of lmbench `lat_mem_rd` and of TLB studies).
//!
//! The list is never materialised: node `p(k)` points to node `p(k+1)` where `p` is a seeded
//! bijection of `[0, n)` (a Feistel network with cycle walking, [`crate::feistel`]), so the
//! generator uses constant memory even for a 4 GiB footprint (64 M nodes). Visiting
//! `p(0), p(1), ..., p(n-1), p(0), ...` touches every node exactly once per cycle.
//!
//! Per node, `sum += p->val; p = p->next;` (`add rax,[rdi+8]; mov rdi,[rdi]; dec rcx; jnz`):
//! a Fetch at the loop head (2 instructions: the previous `dec/jnz`), Load `val` at offset 8 (1),
//! Load `next` at offset 0 (1). 4 instructions per node. Both loads depend on the previous node's
//! `next` (marked `dep`: the chain of dependent misses the benchmark measures).

use crate::Proc;
use crate::feistel::Feistel;
use crate::layout::{CODE_LEN, OpBuf, PAGE, Region, data_len, place_down};

/// One page (64 nodes) at least.
pub const MIN_FOOTPRINT: u64 = PAGE;
/// Node size in bytes.
pub const NODE: u64 = 64;
/// Code offset of the chase loop.
const LOOP_PC: u64 = 0x3080;
/// Ops per node.
const OPS: usize = 3;

/// Bytes mapped by one process.
pub fn mapped(fp: u64) -> u64 {
    CODE_LEN + data_len(fp)
}

/// One process chasing pointers.
pub struct Chase {
    nodes: Region,
    perm: Feistel,
    k: u64,
    started: bool,
}

impl Chase {
    /// A process over a `fp`-byte node pool (at least [`MIN_FOOTPRINT`]).
    pub fn new(fp: u64, seed: u64) -> Self {
        let nodes = place_down(&[data_len(fp)])[0];
        Chase {
            perm: Feistel::new(nodes.len / NODE, seed),
            nodes,
            k: 0,
            started: false,
        }
    }
}

impl Proc for Chase {
    #[inline]
    fn step(&mut self, buf: &mut OpBuf) {
        if !self.started {
            self.started = true;
            buf.push(Region::code().map());
            buf.push(self.nodes.map());
            return;
        }
        while buf.room() >= OPS {
            let node = self.perm.apply(self.k) * NODE;
            buf.fetch(LOOP_PC, 2);
            // Both loads need `p`, the previous node's `next`: a dependent chain.
            buf.load_dep(self.nodes.at(node + 8), 1);
            buf.load_dep(self.nodes.at(node), 1);
            self.k += 1;
            if self.k == self.perm.len() {
                self.k = 0;
            }
        }
    }
}
