//! Property tests: round trips against the identity oracle, the lackey parser against a naive
//! oracle parser, and random or truncated bytes fed to every reader (never a panic or a hang).

use compromis_trace::{
    ChampSimReader, ChampSimRecords, LackeyReader, LackeyWriter, NativeReader, NativeWriter,
    ReadOptions, Record, RecordKind, RecordSink, RecordSource, open_stream,
};
use proptest::prelude::*;
use std::io::Write;

fn kind() -> impl Strategy<Value = RecordKind> {
    prop::sample::select(RecordKind::ALL.to_vec())
}

fn record() -> impl Strategy<Value = Record> {
    let addr = prop_oneof![any::<u64>(), 0u64..0x10000, 0x7fff_0000u64..0x7fff_1000];
    let size = prop_oneof![0u32..16, any::<u32>()];
    (kind(), addr, size).prop_map(|(k, a, s)| Record::new(k, a, s))
}

fn native(recs: &[Record]) -> Vec<u8> {
    let mut w = NativeWriter::new(Vec::new()).unwrap();
    for r in recs {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap()
}

fn lackey(recs: &[Record]) -> Vec<u8> {
    let mut w = LackeyWriter::new(Vec::new());
    for r in recs {
        w.write_record(r).unwrap();
    }
    w.into_inner().unwrap()
}

/// Naive oracle: the lackey grammar with `str` functions.
fn oracle_line(line: &str) -> Option<Option<Record>> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() || line.starts_with("==") || line.starts_with("--") {
        return Some(None);
    }
    let (kind, rest) = if let Some(r) = line.strip_prefix("I  ") {
        (RecordKind::Instr, r)
    } else if let Some(r) = line.strip_prefix(" L ") {
        (RecordKind::Load, r)
    } else if let Some(r) = line.strip_prefix(" S ") {
        (RecordKind::Store, r)
    } else if let Some(r) = line.strip_prefix(" M ") {
        (RecordKind::Modify, r)
    } else {
        return None;
    };
    let (a, s) = rest.split_once(',')?;
    if a.is_empty() || a.len() > 16 || !a.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Some(Record::new(
        kind,
        u64::from_str_radix(a, 16).ok()?,
        s.parse().ok()?,
    )))
}

fn line_strategy() -> impl Strategy<Value = String> {
    let good = (kind(), any::<u64>(), 0u32..100).prop_map(|(k, a, s)| {
        let mut v = Vec::new();
        let mut w = LackeyWriter::new(&mut v);
        w.write_record(&Record::new(k, a, s)).unwrap();
        drop(w);
        String::from_utf8(v).unwrap().trim_end().to_owned()
    });
    prop_oneof![
        4 => good,
        1 => "[IL SM=,0-9a-fA-Fxg\\-]{0,24}",
        1 => "==[0-9]{1,5}== .{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn native_round_trip(recs in prop::collection::vec(record(), 0..400)) {
        let bytes = native(&recs);
        let back: Vec<Record> = NativeReader::new(&bytes[..], "p").unwrap().map(Result::unwrap).collect();
        prop_assert_eq!(back, recs);
    }

    #[test]
    fn lackey_round_trip(recs in prop::collection::vec(record(), 0..400)) {
        // Lackey sizes are decimal up to 9 digits in our reader.
        let recs: Vec<Record> = recs.into_iter().map(|mut r| { r.size %= 1_000_000_000; r }).collect();
        let bytes = lackey(&recs);
        let back: Vec<Record> = LackeyReader::new(&bytes[..], "p", false).map(Result::unwrap).collect();
        prop_assert_eq!(back, recs);
    }

    #[test]
    fn lackey_parser_matches_oracle(lines in prop::collection::vec(line_strategy(), 0..40), cap in 1usize..64) {
        let text = lines.join("\n");
        let want: Vec<Record> = lines.iter().filter_map(|l| oracle_line(l)).flatten().collect();
        let bad = lines.iter().filter(|l| oracle_line(l).is_none()).count() as u64;
        let mut r = LackeyReader::new(std::io::BufReader::with_capacity(cap, text.as_bytes()), "p", true);
        let got: Vec<Record> = r.by_ref().map(Result::unwrap).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(r.skipped(), bad);
        // Without skipping, the first bad line is reported with its line number.
        if let Some(i) = lines.iter().position(|l| oracle_line(l).is_none()) {
            let e = LackeyReader::new(text.as_bytes(), "p", false).find_map(Result::err).unwrap();
            let line_no = format!("line {}:", i + 1);
            prop_assert!(e.to_string().contains(&line_no), "{}", e);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), skip in any::<bool>()) {
        let n = bytes.len();
        prop_assert!(LackeyReader::new(&bytes[..], "p", skip).count() <= n + 1);
        prop_assert!(ChampSimRecords::new(ChampSimReader::new(&bytes[..], "p", skip)).count() <= n);
        if let Ok(r) = NativeReader::new(&bytes[..], "p") {
            let _ = r.count();
        }
        let opts = ReadOptions { skip_bad_records: skip, format: None };
        if let Ok(r) = open_stream(Box::new(std::io::Cursor::new(bytes.clone())), "p", &opts) {
            prop_assert!(r.count() <= n + 1);
        }
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        let mut bytes = native(&[])[..16].to_vec();
        // A valid zstd frame of random content exercises the block decoder itself.
        bytes.extend_from_slice(&zstd::encode_all(&body[..], 1).unwrap());
        if let Ok(r) = NativeReader::new(&bytes[..], "p") {
            let _ = r.count();
        }
    }

    #[test]
    fn corrupted_native_body_never_panics(
        recs in prop::collection::vec(record(), 1..300),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let full = native(&recs);
        let mut body = zstd::decode_all(&full[16..]).unwrap();
        for (i, b) in &flips {
            let i = i.index(body.len());
            body[i] = *b;
        }
        body.truncate(cut.index(body.len() + 1).max(1));
        let mut bytes = full[..16].to_vec();
        bytes.extend_from_slice(&zstd::encode_all(&body[..], 1).unwrap());
        let n = NativeReader::new(&bytes[..], "p").unwrap().count();
        prop_assert!(n <= recs.len() + 1 + 16 * body.len());
        // The batch interface sees the same records and the same end.
        let mut r = NativeReader::new(&bytes[..], "p").unwrap();
        let (mut ok, mut errs) = (0, 0);
        while let Some(b) = r.next_batch() {
            match b {
                Ok(b) => ok += b.len(),
                Err(_) => errs += 1,
            }
        }
        prop_assert_eq!(ok + errs, n);
    }

    #[test]
    fn truncated_files_error_or_prefix(recs in prop::collection::vec(record(), 1..300), frac in 0.0f64..1.0) {
        let recs: Vec<Record> = recs.into_iter().map(|mut r| { r.size %= 1000; r }).collect();
        let text = lackey(&recs);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        for full in [native(&recs), gz.finish().unwrap(), zstd::encode_all(&text[..], 1).unwrap()] {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let cut = ((full.len() as f64) * frac) as usize;
            let opts = ReadOptions::default();
            let got: Vec<_> = match open_stream(Box::new(std::io::Cursor::new(full[..cut].to_vec())), "p", &opts) {
                Ok(r) => r.collect(),
                Err(_) => continue,
            };
            let ok: Vec<Record> = got.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
            // Whatever was read before the error is a prefix of the records (a lackey line cut
            // in the middle may still parse as a shorter address, so compare all but the last).
            let k = ok.len().saturating_sub(1);
            prop_assert_eq!(&ok[..k], &recs[..k]);
        }
    }
}
