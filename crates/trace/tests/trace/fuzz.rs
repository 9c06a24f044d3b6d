//! Mutation fuzzing of the memory-trace readers (issue 15): the seed corpus in
//! `tests/data/fuzz/` (lackey text, gzip lackey, ChampSim, xz ChampSim, native; generated from
//! `seed.lackey` with `compromis trace convert`, gzip and xz) is mutated by bit flips,
//! truncation, insertion and deletion, then read with format detection (and with each format
//! forced), with and without `--skip-bad-records`. Every read must end in records or an error
//! that names the input, never a panic or an unbounded stream. 256 cases by default;
//! `PROPTEST_CASES=100000` for a long local run.

use compromis_trace::{MemTraceFormat, ReadOptions, open_stream};
use compromis_types::fuzz::{apply, cases, mutation};
use proptest::prelude::*;

const TOKENS: &[u8] = b" ILSMX,\n0123456789abcdefg";
const SPECIALS: &[&[u8]] = &[b"ffffffffffffffffffff"];
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

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/fuzz")
            .join(name),
    )
    .unwrap()
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
        muts in proptest::collection::vec(mutation(TOKENS, SPECIALS), 1..5),
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
