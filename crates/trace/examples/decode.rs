//! Decodes native traces and prints records per second: a fixed amount of work to time
//! (`perf stat`, `/usr/bin/time`, callgrind) beside the criterion benches.
//!
//! `cargo run --release -p compromis-trace --example decode -- FILE.ctrace [PASSES] [--batches|--ops]`
//!
//! `--batches` reads with `NativeReader::next_batch`, `--ops` the simulator's way
//! (`OpReader::read_ops`, 8,192 ops at a time; it prints ops per second).
//!
//! Besides the wall time it prints the CPU time of the calling thread (the record decoder's;
//! decompression runs on the reader's own thread): a figure that a loaded machine disturbs
//! less than wall time.

use compromis_trace::{NativeReader, OpReader};
use compromis_types::Op;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: decode FILE.ctrace [PASSES] [--batches|--ops]")?;
    let passes: u32 = args.get(1).map_or(Ok(5), |s| s.parse())?;
    let batches = args.iter().any(|a| a == "--batches");
    let ops = args.iter().any(|a| a == "--ops");
    // Leaked: `OpReader` takes a boxed source that owns its input.
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    let start = std::time::Instant::now();
    let cpu0 = thread_cpu_seconds();
    let (mut n, mut sum) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(8192);
    for _ in 0..passes {
        let mut r = NativeReader::new(bytes, path)?;
        if ops {
            let mut r = OpReader::from_records(Box::new(r));
            loop {
                buf.clear();
                r.read_ops(&mut buf, 8192)?;
                for op in &buf {
                    if let Op::Access { gva, .. } = op {
                        sum = sum.wrapping_add(gva.0);
                    }
                }
                n += buf.len() as u64;
                if buf.len() < 8192 {
                    break;
                }
            }
        } else if batches {
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
    let cpu = thread_cpu_seconds() - cpu0;
    let what = if ops { "ops" } else { "records" };
    println!(
        "{n} {what} in {s:.3} s: {:.1} M {what}/s; this thread's CPU {cpu:.3} s: {:.1} M {what} per CPU second (checksum {sum:x})",
        n as f64 / s / 1e6,
        n as f64 / cpu / 1e6
    );
    Ok(())
}

/// CPU time of the calling thread, in seconds.
#[allow(unsafe_code)]
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return f64::NAN;
    }
    #[allow(clippy::cast_precision_loss)]
    let s = t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9;
    s
}
