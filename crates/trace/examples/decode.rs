//! Decodes native traces and prints records per second: a fixed amount of work to time
//! (`perf stat`, `/usr/bin/time`) beside the criterion benches.
//!
//! `cargo run --release -p compromis-trace --example decode -- FILE.ctrace [PASSES] [--batches]`

use compromis_trace::NativeReader;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: decode FILE.ctrace [PASSES] [--batches]")?;
    let passes: u32 = args.get(1).map_or(Ok(5), |s| s.parse())?;
    let batches = args.iter().any(|a| a == "--batches");
    let bytes = std::fs::read(path)?;
    let start = std::time::Instant::now();
    let (mut n, mut sum) = (0u64, 0u64);
    for _ in 0..passes {
        let mut r = NativeReader::new(&bytes[..], path)?;
        if batches {
            while let Some(b) = r.next_batch() {
                for rec in b? {
                    sum = sum.wrapping_add(rec.addr.0);
                    n += 1;
                }
            }
        } else {
            for rec in r {
                sum = sum.wrapping_add(rec?.addr.0);
                n += 1;
            }
        }
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "{n} records in {s:.3} s: {:.1} M records/s (checksum {sum:x})",
        n as f64 / s / 1e6
    );
    Ok(())
}
