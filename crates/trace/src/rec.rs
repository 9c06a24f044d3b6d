//! The record every reader produces and every writer takes: one lackey-style access.

use compromis_types::{AccessKind, Gva, Op};

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// An instruction fetch: starts a new instruction (`addr` is its ip, `size` its length).
    Instr,
    /// A data load of the current instruction.
    Load,
    /// A data store of the current instruction.
    Store,
    /// A read-modify-write of the current instruction (lackey's ` M`): a load then a store.
    Modify,
}

impl RecordKind {
    /// All kinds, in encoding order.
    pub const ALL: [RecordKind; 4] = [
        RecordKind::Instr,
        RecordKind::Load,
        RecordKind::Store,
        RecordKind::Modify,
    ];
}

/// One trace record, as valgrind lackey prints it: `I  ADDR,SIZE`, ` L ADDR,SIZE`, ` S ..`, ` M ..`.
///
/// Instruction boundaries are kept: every [`RecordKind::Instr`] starts an instruction and the data
/// records after it belong to it. `size` is 0 when the source format does not know it (ChampSim).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// Instruction, load, store or modify.
    pub kind: RecordKind,
    /// The virtual address accessed (the ip for an instruction).
    pub addr: Gva,
    /// Access size in bytes (instruction length for an instruction), 0 if unknown.
    pub size: u32,
}

/// The typed record of a valgrind lackey trace (the same as every other format's [`Record`]).
pub type LackeyRecord = Record;

impl Record {
    /// A record from its parts.
    pub fn new(kind: RecordKind, addr: u64, size: u32) -> Record {
        Record {
            kind,
            addr: Gva(addr),
            size,
        }
    }

    /// The simulator ops of this record: an instruction fetch counts one instruction; data
    /// accesses count none; a modify is a load then a store. Returns the first op and, for a
    /// modify, the second.
    ///
    /// Traces carry no data flow, so the dependency rule is the conservative one: every load
    /// depends on the previous load (`dep`, a chain as in pointer chasing); stores and fetches
    /// depend on nothing (docs/machine-model.md, "Memory-level parallelism").
    #[inline]
    pub fn ops(&self) -> (Op, Option<Op>) {
        let access = |kind, instrs| Op::Access {
            gva: self.addr,
            kind,
            instrs,
            dep: kind == AccessKind::Load,
        };
        match self.kind {
            RecordKind::Instr => (access(AccessKind::Fetch, 1), None),
            RecordKind::Load => (access(AccessKind::Load, 0), None),
            RecordKind::Store => (access(AccessKind::Store, 0), None),
            RecordKind::Modify => (
                access(AccessKind::Load, 0),
                Some(access(AccessKind::Store, 0)),
            ),
        }
    }

    /// How many simulator accesses this record makes (2 for a modify, else 1).
    #[inline]
    pub fn access_count(&self) -> u64 {
        if self.kind == RecordKind::Modify {
            2
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modify_is_load_then_store() {
        let (a, b) = Record::new(RecordKind::Modify, 0x10, 8).ops();
        assert_eq!(
            a,
            Op::Access {
                gva: Gva(0x10),
                kind: AccessKind::Load,
                instrs: 0,
                dep: true
            }
        );
        assert_eq!(
            b,
            Some(Op::Access {
                gva: Gva(0x10),
                kind: AccessKind::Store,
                instrs: 0,
                dep: false
            })
        );
    }

    #[test]
    fn instr_counts_one_instruction() {
        let (a, b) = Record::new(RecordKind::Instr, 0x400000, 3).ops();
        assert_eq!(
            a,
            Op::Access {
                gva: Gva(0x400000),
                kind: AccessKind::Fetch,
                instrs: 1,
                dep: false
            }
        );
        assert!(b.is_none());
    }
}
