//! Mutation fuzzing of the five VM-trace readers (issue 15): a seed corpus of small generated
//! traces (`tests/data/fuzz/`, no third-party data) is mutated by bit flips, truncation,
//! insertion and deletion; every reader must end with events or a named error, never a panic or
//! a hang. 256 cases per format by default; `PROPTEST_CASES=100000` for a long local run.

use compromis_cluster::{TraceFormat, TraceOptions, open_trace};
use compromis_types::fuzz::{Mutation, apply, cases, mutation};
use proptest::prelude::*;

/// Bytes that matter to the parsers.
const TOKENS: &[u8] = b",;\t\n|-.0123456789xUC eE";
const SPECIALS: &[&[u8]] = &[b"99999999999999999999999", "\u{e9}\u{2603}".as_bytes()];
use std::path::{Path, PathBuf};

/// The format, the path given to the reader (relative to the seed folder) and the file mutated.
const SEEDS: &[(TraceFormat, &str, &str)] = &[
    (TraceFormat::Azure, "azure/vmtable.csv", "azure/vmtable.csv"),
    (TraceFormat::AzureRnn, "azure-rnn", "azure-rnn/x.txt"),
    (TraceFormat::AzureRnn, "azure-rnn", "azure-rnn/x.c1000.txt"),
    (TraceFormat::AzureRnn, "azure-rnn", "azure-rnn/flav_map.txt"),
    (
        TraceFormat::AzureRnn,
        "azure-rnn",
        "azure-rnn/v1.interval_map.txt",
    ),
    (
        TraceFormat::Google2011,
        "google2011",
        "google2011/task_events-part-00000.csv",
    ),
    (
        TraceFormat::Alibaba2018,
        "alibaba2018/container_meta.csv",
        "alibaba2018/container_meta.csv",
    ),
    (TraceFormat::Bitbrains, "bitbrains", "bitbrains/1.csv"),
];

/// Events read before a reader is declared unbounded (the seeds have a handful).
const MAX_EVENTS: usize = 100_000;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Reads the mutated seed `which`: events or errors, each error's message naming a file.
fn read_mutated(which: usize, muts: &[Mutation]) -> Result<(), TestCaseError> {
    let (format, given, mutated) = SEEDS[which];
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&corpus(), dir.path());
    let target = dir.path().join(mutated);
    let bytes = apply(std::fs::read(&target).unwrap(), muts);
    std::fs::write(&target, &bytes).unwrap();
    let path = dir.path().join(given);
    let opts = TraceOptions::default();
    let stream = match open_trace(&path, format, &opts) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains("fuzz") || msg.contains(".tmp"), "{msg}");
            return Ok(());
        }
    };
    let mut n = 0;
    for ev in stream {
        n += 1;
        prop_assert!(n < MAX_EVENTS, "{format:?}: unbounded stream");
        if let Err(e) = ev {
            let msg = e.to_string();
            prop_assert!(!msg.is_empty());
            prop_assert!(
                msg.contains(dir.path().file_name().unwrap().to_str().unwrap()),
                "{format:?}: error names no file: {msg}"
            );
            prop_assert!(
                msg.len() < 2000,
                "{format:?}: message too long: {}",
                msg.len()
            );
        }
    }
    Ok(())
}

#[test]
fn seeds_read_cleanly() {
    for (i, (format, _, _)) in SEEDS.iter().enumerate() {
        let (_, given, _) = SEEDS[i];
        let stream = open_trace(&corpus().join(given), *format, &TraceOptions::default())
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        let events: Vec<_> = stream.collect::<Result<_, _>>().unwrap();
        assert!(!events.is_empty(), "{format:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mutated_vm_traces_end_in_events_or_named_errors(
        which in 0..SEEDS.len(),
        muts in proptest::collection::vec(mutation(TOKENS, SPECIALS), 1..6),
    ) {
        read_mutated(which, &muts)?;
    }
}
