//! Prints the access mix of every workload: `cargo run --release -p compromis-workload
//! --example mix [footprint] [accesses]` (defaults 1GiB, 1000000).

use compromis_types::{AccessKind, ByteSize, Op};
use compromis_workload::{WorkloadKind, WorkloadSpec, build, mapped_bytes};
use std::collections::BTreeSet;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let footprint: ByteSize = args.next().as_deref().unwrap_or("1GiB").parse()?;
    let accesses: u64 = args.next().as_deref().unwrap_or("1000000").parse()?;
    println!("footprint {footprint}, {accesses} accesses, 1 process");
    println!(
        "{:<14} {:>7} {:>7} {:>7} {:>9} {:>6} {:>6} {:>9} {:>8} {:>12}",
        "workload",
        "fetch%",
        "load%",
        "store%",
        "instr/acc",
        "maps",
        "unmaps",
        "4K pages",
        "2M pages",
        "mapped"
    );
    for kind in WorkloadKind::ALL {
        let spec = WorkloadSpec {
            kind,
            footprint,
            accesses,
            ..WorkloadSpec::default()
        };
        let (mut f, mut l, mut s, mut instrs, mut maps, mut unmaps) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let mut small = BTreeSet::new();
        let mut huge = BTreeSet::new();
        for op in build(&spec)? {
            match op {
                Op::Access {
                    gva,
                    kind,
                    instrs: n,
                    ..
                } => {
                    match kind {
                        AccessKind::Fetch => f += 1,
                        AccessKind::Load => l += 1,
                        AccessKind::Store => s += 1,
                    }
                    instrs += u64::from(n);
                    small.insert(gva.0 >> 12);
                    huge.insert(gva.0 >> 21);
                }
                Op::Map { .. } => maps += 1,
                Op::Unmap { .. } => unmaps += 1,
                Op::Switch { .. } => {}
            }
        }
        let pct = |x: u64| 100.0 * x as f64 / accesses as f64;
        println!(
            "{:<14} {:>7.1} {:>7.1} {:>7.1} {:>9.2} {:>6} {:>6} {:>9} {:>8} {:>12}",
            kind.name(),
            pct(f),
            pct(l),
            pct(s),
            instrs as f64 / accesses as f64,
            maps,
            unmaps,
            small.len(),
            huge.len(),
            ByteSize(mapped_bytes(&spec)).to_string()
        );
    }
    Ok(())
}
