//! Mutation fuzzing of the machine-model TOML reader (issue 15): the default machine file
//! (`tests/data/fuzz/machine.toml`, from `compromis config --defaults`) is mutated by bit flips,
//! truncation, insertion and deletion; parsing must give a configuration or an error naming the
//! file, never a panic or a huge allocation (TLB geometry is capped before anything is built).
//! 256 cases by default; `PROPTEST_CASES=100000` for a long local run.

use compromis_mmu::config::MachineConfig;
use proptest::prelude::*;
use std::path::Path;

const TOKENS: &[u8] = b"=[]{},.\"\n#0123456789 entriesways";

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
                    prop::sample::select(TOKENS.to_vec()),
                    1..16
                ),
                Just(b"18446744073709551615".to_vec()),
                Just(b"99999999TiB".to_vec()),
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

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

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
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let bytes = apply(seed(), &muts);
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = MachineConfig::from_toml_str(&text, "fuzz-input") {
            let msg = e.to_string();
            prop_assert!(msg.contains("fuzz-input"), "{msg}");
        }
    }
}
