//! `stream`: the STREAM triad `a[i] = b[i] + s*c[i]` (McCalpin, STREAM benchmark, `stream.c`,
//! kernel "Triad"), over three arrays of 8-byte doubles that each take a third of the footprint,
//! swept sequentially and wrapping around.
//!
//! Per element (scalar code, as gcc -O2 emits it without vectorisation):
//! `movsd c[i]; mulsd s; addsd b[i]; movsd -> a[i]; add; cmp; jne`: 7 instructions.
//! Ops: a Fetch at the loop head (3 instructions: the previous iteration's `add/cmp/jne`
//! counted with it), Load `c[i]` (1), Load `b[i]` (2: `mulsd` and the `addsd` carrying the load),
//! Store `a[i]` (1).

use crate::Proc;
use crate::layout::{CODE_LEN, OpBuf, PAGE, Region, data_len, place_down};

/// One page per array at least.
pub const MIN_FOOTPRINT: u64 = 3 * PAGE;
/// Code offset of the triad loop.
const LOOP_PC: u64 = 0x2100;
/// Ops per element.
const OPS: usize = 4;

/// The `a`, `b`, `c` regions for a footprint.
fn arrays(fp: u64) -> [Region; 3] {
    let len = data_len(fp / 3);
    let r = place_down(&[len, len, len]);
    [r[0], r[1], r[2]]
}

/// Bytes mapped by one process.
pub fn mapped(fp: u64) -> u64 {
    CODE_LEN + 3 * data_len(fp / 3)
}

/// One process running the triad.
pub struct Stream {
    a: Region,
    b: Region,
    c: Region,
    n: u64,
    i: u64,
    started: bool,
}

impl Stream {
    /// A process over a `fp`-byte footprint (at least [`MIN_FOOTPRINT`]); the seed is unused
    /// (the kernel has no random choice) but kept for a uniform interface.
    pub fn new(fp: u64, _seed: u64) -> Self {
        let [a, b, c] = arrays(fp);
        Stream {
            a,
            b,
            c,
            n: a.len / 8,
            i: 0,
            started: false,
        }
    }
}

impl Proc for Stream {
    #[inline]
    fn step(&mut self, buf: &mut OpBuf) {
        if !self.started {
            self.started = true;
            buf.push(Region::code().map());
            buf.push(self.a.map());
            buf.push(self.b.map());
            buf.push(self.c.map());
            return;
        }
        while buf.room() >= OPS {
            let off = self.i * 8;
            buf.fetch(LOOP_PC, 3);
            buf.load(self.c.at(off), 1);
            buf.load(self.b.at(off), 2);
            buf.store(self.a.at(off), 1);
            self.i += 1;
            if self.i == self.n {
                self.i = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_types::{AccessKind, Op};

    #[test]
    fn sequential_triad_wraps() {
        // 3 pages: 512 elements per array.
        let mut s = Stream::new(3 * PAGE, 0);
        let mut buf = OpBuf::default();
        s.step(&mut buf);
        let maps: Vec<Op> = std::iter::from_fn(|| buf.pop()).collect();
        assert_eq!(maps.len(), 4);
        let mut stores = Vec::new();
        while stores.len() < 1030 {
            s.step(&mut buf);
            while let Some(op) = buf.pop() {
                if let Op::Access {
                    gva,
                    kind: AccessKind::Store,
                    ..
                } = op
                {
                    stores.push(gva.0 - s.a.start.0);
                }
            }
        }
        let expect: Vec<u64> = (0..1030u64).map(|i| (i % 512) * 8).collect();
        assert_eq!(stores[..1030], expect[..]);
    }
}
