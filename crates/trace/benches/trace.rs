//! Throughput of the trace readers: lackey text parsing (MB/s) and native decoding (records/s).

use compromis_trace::{LackeyReader, NativeReader, NativeWriter, Record, RecordKind, RecordSink};
use criterion::{Criterion, Throughput, criterion_main};
use std::hint::black_box;

/// A lackey-like stream: sequential code with loops, stack and heap accesses (deterministic).
fn synthetic(n: u64) -> Vec<Record> {
    let mut v = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut ip = 0x0401_0000u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = 1 + u32::try_from(x % 7).unwrap_or(0);
        v.push(Record::new(RecordKind::Instr, ip, size));
        ip += u64::from(size);
        if i % 64 == 63 {
            ip -= 200;
        }
        match x % 5 {
            0 => v.push(Record::new(
                RecordKind::Load,
                0x1f_ff00_0d48 - (x % 64) * 8,
                8,
            )),
            1 => v.push(Record::new(
                RecordKind::Store,
                0x0403_3000 + (x % 4096) * 8,
                8,
            )),
            2 => v.push(Record::new(RecordKind::Modify, 0x04a1_a2c8, 4)),
            _ => {}
        }
    }
    v
}

fn lackey_text(recs: &[Record]) -> Vec<u8> {
    let mut w = compromis_trace::LackeyWriter::new(Vec::new());
    for r in recs {
        w.write_record(r).expect("in memory");
    }
    w.into_inner().expect("in memory")
}

fn bench(c: &mut Criterion) {
    let recs = synthetic(1_000_000);
    let text = lackey_text(&recs);
    let mut g = c.benchmark_group("lackey");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let r = LackeyReader::new(&text[..], "bench", false);
            let mut sum = 0u64;
            for rec in r {
                sum = sum.wrapping_add(rec.expect("valid").addr.0);
            }
            black_box(sum)
        })
    });
    g.finish();

    let mut w = NativeWriter::new(Vec::new()).expect("in memory");
    for r in &recs {
        w.write_record(r).expect("in memory");
    }
    let native = w.finish().expect("in memory");
    let mut g = c.benchmark_group("native");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let r = NativeReader::new(&native[..], "bench").expect("valid");
            let mut sum = 0u64;
            for rec in r {
                sum = sum.wrapping_add(rec.expect("valid").addr.0);
            }
            black_box(sum)
        })
    });
    g.bench_function("decode_batches", |b| {
        b.iter(|| {
            let mut r = NativeReader::new(&native[..], "bench").expect("valid");
            let mut sum = 0u64;
            while let Some(batch) = r.next_batch() {
                for rec in batch.expect("valid") {
                    sum = sum.wrapping_add(rec.addr.0);
                }
            }
            black_box(sum)
        })
    });
    // The floor: zstd decompression of the body alone, without decoding records.
    g.bench_function("zstd_only", |b| {
        b.iter(|| {
            let mut sink = std::io::sink();
            zstd::stream::copy_decode(&native[16..], &mut sink).expect("valid");
            black_box(&mut sink);
        })
    });
    g.bench_function("encode", |b| {
        b.iter(|| {
            let mut w = NativeWriter::new(Vec::new()).expect("in memory");
            for r in &recs {
                w.write_record(r).expect("in memory");
            }
            black_box(w.finish().expect("in memory").len())
        })
    });
    g.finish();
    real(c);
    eprintln!(
        "{} synthetic records: lackey text {} bytes, native {} bytes ({:.2} bytes/record)",
        recs.len(),
        text.len(),
        native.len(),
        native.len() as f64 / recs.len() as f64
    );
}

/// A real trace: `sort -n` over 300 numbers under valgrind lackey, recorded at bench setup
/// (skipped when valgrind is absent).
fn real(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.txt");
    let numbers: String = (0..300u32)
        .map(|i| format!("{}\n", (i * 7919) % 300))
        .collect();
    std::fs::write(&input, numbers).expect("write input");
    let log = dir.path().join("lackey.log");
    let ok = std::process::Command::new("valgrind")
        .args(["--tool=lackey", "--trace-mem=yes"])
        .arg(format!("--log-file={}", log.display()))
        .args(["sort", "-n"])
        .arg(&input)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("valgrind not available: no real-trace benchmarks");
        return;
    }
    let text = std::fs::read(&log).expect("read log");
    let recs: Vec<Record> = LackeyReader::new(&text[..], "real", false)
        .map(|r| r.expect("valid"))
        .collect();
    let mut w = NativeWriter::new(Vec::new()).expect("in memory");
    for r in &recs {
        w.write_record(r).expect("in memory");
    }
    let native = w.finish().expect("in memory");
    let mut g = c.benchmark_group("real_sort");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("lackey_parse", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for rec in LackeyReader::new(&text[..], "bench", false) {
                sum = sum.wrapping_add(rec.expect("valid").addr.0);
            }
            black_box(sum)
        })
    });
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("native_decode", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for rec in NativeReader::new(&native[..], "bench").expect("valid") {
                sum = sum.wrapping_add(rec.expect("valid").addr.0);
            }
            black_box(sum)
        })
    });
    g.bench_function("native_decode_batches", |b| {
        b.iter(|| {
            let mut r = NativeReader::new(&native[..], "bench").expect("valid");
            let mut sum = 0u64;
            while let Some(batch) = r.next_batch() {
                for rec in batch.expect("valid") {
                    sum = sum.wrapping_add(rec.addr.0);
                }
            }
            black_box(sum)
        })
    });
    g.finish();
    eprintln!(
        "real sort trace, {} records: lackey text {} bytes, native {} bytes ({:.2} bytes/record)",
        recs.len(),
        text.len(),
        native.len(),
        native.len() as f64 / recs.len() as f64
    );
}

// criterion_group! generates an undocumented pub fn; a private module keeps it out of the docs lint.
mod group {
    use super::bench;
    use criterion::criterion_group;
    criterion_group!(benches, bench);
}
criterion_main!(group::benches);
