//! Opening trace files: compression and format detection, conversion through files, bad input.

use compromis_trace::{
    ChampSimInstr, MemTraceFormat, ReadOptions, Record, RecordKind, TraceError, TraceFileWriter,
    TraceStats, convert, open_ops, open_records,
};
use compromis_types::{AccessKind, Gva, Op};
use std::io::Write;
use std::path::{Path, PathBuf};

const LACKEY: &str = concat!(
    "==42== Lackey, an example Valgrind tool\n",
    "I  0401ab70,3\n",
    " S 1fff000778,8\n",
    "I  0401ab73,5\n",
    " L 04033e06,1\n",
    " M 04032e58,8\n",
    "==42== \n",
);

fn expected() -> Vec<Record> {
    vec![
        Record::new(RecordKind::Instr, 0x0401_ab70, 3),
        Record::new(RecordKind::Store, 0x1f_ff00_0778, 8),
        Record::new(RecordKind::Instr, 0x0401_ab73, 5),
        Record::new(RecordKind::Load, 0x0403_3e06, 1),
        Record::new(RecordKind::Modify, 0x0403_2e58, 8),
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}
fn xz(b: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(b).unwrap();
    e.finish().unwrap()
}
fn zst(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}

fn read(p: &Path) -> Result<Vec<Record>, TraceError> {
    open_records(p, &ReadOptions::default())?.collect()
}

#[test]
fn lackey_in_every_compression_and_any_name() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("plain.txt", LACKEY.as_bytes().to_vec()),
        ("a.gz", gz(LACKEY.as_bytes())),
        ("b.xz", xz(LACKEY.as_bytes())),
        ("c.zst", zst(LACKEY.as_bytes())),
        // Misleading names: detection is by magic bytes.
        ("d.txt", gz(LACKEY.as_bytes())),
        ("e.gz", zst(LACKEY.as_bytes())),
    ] {
        let p = write(dir.path(), name, &bytes);
        assert_eq!(read(&p).unwrap(), expected(), "{name}");
    }
}

fn champsim_bytes() -> Vec<u8> {
    let a = ChampSimInstr {
        ip: Gva(0x401000),
        source_memory: [Gva(0x7000), Gva(0), Gva(0), Gva(0)],
        ..Default::default()
    };
    let b = ChampSimInstr {
        ip: Gva(0x401004),
        destination_memory: [Gva(0x8000), Gva(0)],
        ..Default::default()
    };
    let mut v = a.to_bytes().to_vec();
    v.extend_from_slice(&b.to_bytes());
    v
}

#[test]
fn champsim_plain_xz_gz() {
    let dir = tempfile::tempdir().unwrap();
    let want = vec![
        Record::new(RecordKind::Instr, 0x401000, 0),
        Record::new(RecordKind::Load, 0x7000, 0),
        Record::new(RecordKind::Instr, 0x401004, 0),
        Record::new(RecordKind::Store, 0x8000, 0),
    ];
    let raw = champsim_bytes();
    for (name, bytes) in [
        ("t.champsim", raw.clone()),
        ("t.xz", xz(&raw)),
        ("t.gz", gz(&raw)),
    ] {
        let p = write(dir.path(), name, &bytes);
        assert_eq!(read(&p).unwrap(), want, "{name}");
    }
    let ops: Vec<Op> = open_ops(&dir.path().join("t.xz"), &ReadOptions::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        ops,
        vec![
            Op::Access {
                gva: Gva(0x401000),
                kind: AccessKind::Fetch,
                instrs: 1,
                dep: false
            },
            Op::Access {
                gva: Gva(0x7000),
                kind: AccessKind::Load,
                instrs: 0,
                dep: true
            },
            Op::Access {
                gva: Gva(0x401004),
                kind: AccessKind::Fetch,
                instrs: 1,
                dep: false
            },
            Op::Access {
                gva: Gva(0x8000),
                kind: AccessKind::Store,
                instrs: 0,
                dep: false
            },
        ]
    );
}

#[test]
fn convert_round_trips_through_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "in.lackey", LACKEY.as_bytes());
    let native = dir.path().join("x.ctrace");
    let s = convert(
        &mut open_records(&src, &ReadOptions::default()).unwrap(),
        &native,
        MemTraceFormat::Native,
    )
    .unwrap();
    assert_eq!(s.records, 5);
    assert_eq!(read(&native).unwrap(), expected());
    let back = dir.path().join("back.lackey.gz");
    convert(
        &mut open_records(&native, &ReadOptions::default()).unwrap(),
        &back,
        MemTraceFormat::Lackey,
    )
    .unwrap();
    assert_eq!(read(&back).unwrap(), expected());
    // ChampSim loses sizes and the modify's record kind, but not the op stream.
    let cs = dir.path().join("x.champsim.xz");
    let s = convert(
        &mut open_records(&native, &ReadOptions::default()).unwrap(),
        &cs,
        MemTraceFormat::ChampSim,
    )
    .unwrap();
    assert_eq!(s.dropped, 0);
    let want: Vec<Op> = open_ops(&native, &ReadOptions::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let got: Vec<Op> = open_ops(&cs, &ReadOptions::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, want);
    // Only the final files remain: no temporary left behind.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["back.lackey.gz", "in.lackey", "x.champsim.xz", "x.ctrace"]
    );
}

#[test]
fn unfinished_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.ctrace");
    let mut w = TraceFileWriter::create(&out, MemTraceFormat::Native).unwrap();
    w.write(&Record::new(RecordKind::Instr, 1, 1)).unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn truncated_compressed_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = LACKEY.repeat(2000);
    for (name, bytes) in [
        ("t.gz", gz(text.as_bytes())),
        ("t.xz", xz(text.as_bytes())),
        ("t.zst", zst(text.as_bytes())),
    ] {
        let cut = &bytes[..bytes.len() * 2 / 3];
        let p = write(dir.path(), name, cut);
        let e = read(&p).unwrap_err();
        assert!(e.to_string().contains(name), "{name}: {e}");
        // Skipping bad records does not hide a damaged stream.
        let opts = ReadOptions {
            skip_bad_records: true,
            format: None,
        };
        let r: Result<Vec<_>, _> = open_records(&p, &opts).and_then(Iterator::collect);
        assert!(r.is_err(), "{name}");
    }
}

#[test]
fn wrong_magic_for_native() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.ctrace", b"NOTATRACE-------0000");
    let e = read(&p).unwrap_err();
    assert!(matches!(e, TraceError::BadMagic { .. }), "{e}");
    assert!(
        e.to_string().contains("bad.ctrace") && e.to_string().contains("byte 0"),
        "{e}"
    );
    // An explicit format also checks the magic.
    let p = write(dir.path(), "bad.bin", b"I  10,1\n");
    let opts = ReadOptions {
        skip_bad_records: false,
        format: Some(MemTraceFormat::Native),
    };
    assert!(matches!(
        open_records(&p, &opts).err(),
        Some(TraceError::BadMagic { .. })
    ));
}

#[test]
fn garbage_line_and_skip_count_in_stats() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "g.lackey",
        b"I  10,1\n L 20,8\nthis is not lackey\n S zz,8\nI  14,2\n",
    );
    let e = read(&p).unwrap_err().to_string();
    assert!(
        e.contains("g.lackey") && e.contains("line 3") && e.contains("this is not lackey"),
        "{e}"
    );
    let opts = ReadOptions {
        skip_bad_records: true,
        format: None,
    };
    let s = TraceStats::collect(&mut open_records(&p, &opts).unwrap()).unwrap();
    assert_eq!(
        (s.records, s.skipped, s.instructions, s.accesses),
        (3, 2, 2, 3)
    );
}

#[test]
fn missing_file() {
    let e = read(Path::new("/nonexistent/x.lackey"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/x.lackey"), "{e}");
}
