//! `gups`: HPCC RandomAccess (Giga-Updates Per Second), the classic TLB-hostile kernel.
//!
//! Source: HPC Challenge RandomAccess (`RandomAccess/core_single_cpu.c`): for each update,
//! `ran = (ran << 1) ^ (ran < 0 ? POLY : 0); Table[ran & (TableSize-1)] ^= ran;`.
//! The table here is any number of 8-byte words (indices drawn uniformly with a seeded ChaCha8
//! stream mapped by multiply-shift, instead of the power-of-two mask).
//!
//! Per update: one instruction fetch at the loop head (8 instructions: the loop control, the
//! LFSR step and the index computation), then the `xor [Table + idx*8], ran` instruction: a Load
//! (1 instruction) and a Store of the same word (0: same instruction). 9 instructions per update.

use crate::Proc;
use crate::layout::{CODE_LEN, OpBuf, PAGE, Region, data_len, place_down};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One 4 KiB page of table at least.
pub const MIN_FOOTPRINT: u64 = PAGE;
/// Code offset of the update loop.
const LOOP_PC: u64 = 0x1a40;
/// Ops per update.
const OPS: usize = 3;

/// The table region for a footprint.
fn table(fp: u64) -> Region {
    place_down(&[data_len(fp)])[0]
}

/// Bytes mapped by one process.
pub fn mapped(fp: u64) -> u64 {
    CODE_LEN + data_len(fp)
}

/// One process running RandomAccess.
pub struct Gups {
    table: Region,
    words: u64,
    rng: ChaCha8Rng,
    started: bool,
}

impl Gups {
    /// A process over a `fp`-byte table (at least [`MIN_FOOTPRINT`]).
    pub fn new(fp: u64, seed: u64) -> Self {
        let table = table(fp);
        Gups {
            table,
            words: table.len / 8,
            rng: ChaCha8Rng::seed_from_u64(seed),
            started: false,
        }
    }
}

impl Proc for Gups {
    #[inline]
    fn step(&mut self, buf: &mut OpBuf) {
        if !self.started {
            self.started = true;
            buf.push(Region::code().map());
            buf.push(self.table.map());
            return;
        }
        while buf.room() >= OPS {
            let w = crate::layout::below(self.rng.next_u64(), self.words);
            let a = self.table.at(w * 8);
            buf.fetch(LOOP_PC, 8);
            buf.load(a, 1);
            buf.store(a, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_types::{AccessKind, Op};

    #[test]
    fn read_modify_write_of_one_word() {
        let mut g = Gups::new(1 << 20, 7);
        let mut buf = OpBuf::default();
        g.step(&mut buf);
        assert!(matches!(buf.pop(), Some(Op::Map { .. })));
        assert!(matches!(buf.pop(), Some(Op::Map { len, .. }) if len == 1 << 20));
        assert_eq!(buf.pop(), None);
        g.step(&mut buf);
        let ops: Vec<Op> = std::iter::from_fn(|| buf.pop()).collect();
        assert_eq!(ops.len() % 3, 0);
        for u in ops.chunks(3) {
            let (
                Op::Access {
                    kind: AccessKind::Fetch,
                    ..
                },
                Op::Access {
                    gva: l,
                    kind: AccessKind::Load,
                    ..
                },
                Op::Access {
                    gva: s,
                    kind: AccessKind::Store,
                    instrs: 0,
                    ..
                },
            ) = (u[0], u[1], u[2])
            else {
                panic!("unexpected update {u:?}");
            };
            assert_eq!(l, s);
            assert_eq!(l.0 % 8, 0);
        }
    }
}
