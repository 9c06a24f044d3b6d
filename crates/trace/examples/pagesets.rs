//! Scratch: prints the 4 KiB pages a trace touches, with I (fetch) / D (data) flags and counts.
use compromis_trace::{RecordKind, open_records};
use std::collections::BTreeMap;
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let src = open_records(p.as_ref(), &Default::default()).unwrap();
    let mut m: BTreeMap<u64, [u64; 3]> = BTreeMap::new();
    for r in src {
        let r = r.unwrap();
        let e = m.entry(r.addr.0 >> 12).or_default();
        match r.kind {
            RecordKind::Instr => e[0] += 1,
            RecordKind::Load => e[1] += 1,
            _ => e[2] += 1,
        }
    }
    for (pg, c) in m {
        println!("{:x} {} {} {}", pg << 12, c[0], c[1], c[2]);
    }
}
