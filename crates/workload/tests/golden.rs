//! Golden streams: the first ops of every workload for a fixed small spec. The stream is a
//! contract (results must be reproducible across versions); after an intended change,
//! regenerate with `UPDATE_GOLDEN=1 cargo test -p compromis-workload --test golden` and review
//! the diff.

use compromis_types::ByteSize;
use compromis_workload::{WorkloadKind, WorkloadSpec, build};
use std::fmt::Write as _;
use std::path::PathBuf;

#[test]
fn first_ops_match_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for kind in WorkloadKind::ALL {
        let spec = WorkloadSpec {
            kind,
            footprint: ByteSize::mib(16),
            accesses: 48,
            processes: 2,
            quantum: 20,
            seed: 7,
        };
        let mut text = String::new();
        for op in build(&spec).expect("valid spec") {
            writeln!(text, "{op:?}").expect("write to a String");
        }
        let path = dir.join(format!("{}.txt", kind.name()));
        if update {
            std::fs::write(&path, &text).expect("write golden file");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != text {
            failures.push(format!("{}:\n{text}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "streams differ from the golden files:\n{}",
        failures.join("\n")
    );
}
