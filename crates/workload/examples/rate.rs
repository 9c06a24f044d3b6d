//! Generates a stream and prints its length and the wall-clock rate: `cargo run --release -p
//! compromis-workload --example rate [workload] [footprint] [accesses]` (defaults gups 1GiB
//! 100000000). Run under `perf stat -e cycles:u` for a load-independent cost per op.

use compromis_types::{ByteSize, Op};
use compromis_workload::{WorkloadSpec, build};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().as_deref().unwrap_or("gups").parse()?;
    let footprint: ByteSize = args.next().as_deref().unwrap_or("1GiB").parse()?;
    let accesses: u64 = args.next().as_deref().unwrap_or("100000000").parse()?;
    let spec = WorkloadSpec {
        kind,
        footprint,
        accesses,
        ..WorkloadSpec::default()
    };
    let t = Instant::now();
    let (mut ops, mut sum) = (0u64, 0u64);
    for op in build(&spec)? {
        ops += 1;
        if let Op::Access { gva, .. } = op {
            sum = sum.wrapping_add(gva.0);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{kind}: {ops} ops in {secs:.3} s = {:.1} M ops/s (checksum {sum:#x})",
        ops as f64 / secs / 1e6
    );
    Ok(())
}
