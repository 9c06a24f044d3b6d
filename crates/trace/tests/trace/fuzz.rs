//! Mutation fuzzing of the memory-trace readers (issue 15): the seed corpus in
//! `tests/data/fuzz/` (lackey text, gzip lackey, ChampSim, xz ChampSim, native; generated from
//! `seed.lackey` with `compromis trace convert`, gzip and xz) is mutated by bit flips,
//! truncation, insertion and deletion, then read with format detection (and with each format
//! forced), with and without `--skip-bad-records`. Every read must end in records or an error
//! that names the input, never a panic or an unbounded stream. 256 cases by default;
//! `PROPTEST_CASES=100000` for a long local run.

use compromis_trace::{MemTraceFormat, ReadOptions, open_stream};
use proptest::prelude::*;
use std::path::Path;

const SEEDS: &[&str] = &[
    "seed.lackey",
    "seed.lackey.gz",
    "seed.champsim",
    "seed.champsim.xz",
    "seed.ctrace",
];

/// Records read before a reader is declared unbounded (a seed holds about 10).
const MAX_RECORDS: usize = 1_000_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/fuzz")
            .join(name),
    )
    .unwrap()
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (
            any::<usize>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..16),
                proptest::collection::vec(
                    prop::sample::select(b" ILSMX,\n0123456789abcdefg".to_vec()),
                    1..16
                ),
                Just(b"ffffffffffffffffffff".to_vec()),
            ]
        )
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        1 => (any::<usize>(), 1usize..32).prop_map(|(p, n)| Mutation::Delete(p, n)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len().max(1);
        match m {
            Mutation::Flip(p, bit) => {
                if !b.is_empty() {
                    b[p % len] ^= 1 << bit;
                }
            }
            Mutation::Truncate(p) => b.truncate(p % len),
            Mutation::Insert(p, bytes) => {
                let at = p % (b.len() + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(p, n) => {
                if !b.is_empty() {
                    let at = p % len;
                    let end = (at + n).min(b.len());
                    b.drain(at..end);
                }
            }
        }
    }
    b
}

fn read_all(bytes: Vec<u8>, opts: &ReadOptions) -> Result<(), TestCaseError> {
    let src = match open_stream(Box::new(std::io::Cursor::new(bytes)), "fuzz-input", opts) {
        Ok(s) => s,
        Err(e) => {
            prop_assert!(e.to_string().contains("fuzz-input"), "{e}");
            return Ok(());
        }
    };
    let mut n = 0usize;
    for r in src {
        n += 1;
        prop_assert!(n < MAX_RECORDS, "unbounded stream");
        if let Err(e) = r {
            let msg = e.to_string();
            prop_assert!(msg.contains("fuzz-input"), "error names no input: {msg}");
            prop_assert!(msg.len() < 2000, "message too long: {}", msg.len());
            // A reader stops at its first unskippable error; nothing more is asked of it.
            break;
        }
    }
    Ok(())
}

#[test]
fn seeds_read_cleanly() {
    for s in SEEDS {
        let src = open_stream(
            Box::new(std::io::Cursor::new(seed(s))),
            s,
            &ReadOptions::default(),
        )
        .unwrap();
        let records: Vec<_> = src.collect::<Result<_, _>>().unwrap();
        assert!(records.len() >= 9, "{s}: {}", records.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mutated_traces_end_in_records_or_named_errors(
        which in 0..SEEDS.len(),
        muts in proptest::collection::vec(mutation(), 1..5),
        forced in prop_oneof![
            Just(None),
            Just(Some(MemTraceFormat::Lackey)),
            Just(Some(MemTraceFormat::ChampSim)),
            Just(Some(MemTraceFormat::Native)),
        ],
        skip in any::<bool>(),
    ) {
        let bytes = apply(seed(SEEDS[which]), &muts);
        let opts = ReadOptions { skip_bad_records: skip, format: forced };
        read_all(bytes, &opts)?;
    }
}
