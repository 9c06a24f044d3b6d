//! Mutation fuzzing of the machine-model TOML reader (issue 15): the default machine file
//! (`tests/data/fuzz/machine.toml`, from `compromis config --defaults`) is mutated by bit flips,
//! truncation, insertion and deletion; parsing must give a configuration or an error naming the
//! file, never a panic or a huge allocation (TLB geometry is capped before anything is built).
//! 256 cases by default; `PROPTEST_CASES=100000` for a long local run.

use compromis_mmu::config::MachineConfig;
use compromis_types::fuzz::{apply, cases, mutation};
use proptest::prelude::*;

const SPECIALS: &[&[u8]] = &[b"18446744073709551615", b"99999999TiB"];
use std::path::Path;

const TOKENS: &[u8] = b"=[]{},.\"\n#0123456789 entriesways";

fn seed() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/machine.toml"))
        .unwrap()
}

#[test]
fn seed_parses() {
    let text = String::from_utf8(seed()).unwrap();
    MachineConfig::from_toml_str(&text, "fuzz-input").unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mutated_machine_files_parse_or_name_the_file(
        muts in proptest::collection::vec(mutation(TOKENS, SPECIALS), 1..6),
    ) {
        let bytes = apply(seed(), &muts);
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = MachineConfig::from_toml_str(&text, "fuzz-input") {
            let msg = e.to_string();
            prop_assert!(msg.contains("fuzz-input"), "{msg}");
        }
    }
}
