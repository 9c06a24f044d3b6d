//! Readers on the real public traces in `../shared/data` (skipped cleanly when absent). Expected
//! counts come from the files themselves (shell one-liners in the comments).

use compromis_cluster::trace::{AzureRnnReader, DurationRule};
use compromis_cluster::{
    Event, Fallback, Fleet, PolicyKind, RejectReason, ReplayOptions, TraceFormat, TraceOptions,
    open_trace, simulate_with,
};
use std::path::PathBuf;

fn data(sub: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("note: {} absent, test skipped", p.display());
        None
    }
}

fn count(path: &std::path::Path, f: TraceFormat) -> (u64, u64, u64, u64) {
    let opts = TraceOptions {
        norm_mem_bytes: 192 << 30,
        ..TraceOptions::default()
    };
    let mut c = (0, 0, 0, 0);
    let mut last = 0;
    for e in open_trace(path, f, &opts).unwrap() {
        let e = e.unwrap();
        assert!(e.time() >= last, "{f}: time goes back at {e:?}");
        last = e.time();
        match e {
            Event::Arrival { initial, .. } => {
                c.0 += 1;
                c.3 += u64::from(initial);
            }
            Event::Departure { .. } | Event::ImplicitEnd { .. } => c.1 += 1,
            Event::Resize { .. } => c.2 += 1,
        }
    }
    c
}

#[test]
fn azure_vmtable_sample() {
    let Some(p) = data("azure-vmtable-sample/vmtable.csv.gz") else {
        return;
    };
    // zcat | awk -F, '{n++; if($4==0) i++} END{print n, i}' -> 10 7; every row has a vmdeleted.
    assert_eq!(count(&p, TraceFormat::Azure), (10, 10, 0, 7));
}

#[test]
fn azure_rnn_dev_split() {
    let Some(p) = data("azure-v1-rnn") else {
        return;
    };
    // 259,159 VMs; 244,842 `U` tokens (ended before the cut-off) depart, 14,317 `C` do not.
    assert_eq!(count(&p, TraceFormat::AzureRnn), (259_159, 244_842, 0, 0));
    // Lower-edge lifetimes are never longer than uniform ones: same arrivals, earlier departures.
    let lower: u64 = AzureRnnReader::open(&p, DurationRule::Lower, 0)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| matches!(e, Event::Departure { .. }))
        .map(|e| e.time())
        .sum();
    let uniform: u64 = AzureRnnReader::open(&p, DurationRule::Uniform, 0)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| matches!(e, Event::Departure { .. }))
        .map(|e| e.time())
        .sum();
    assert!(lower < uniform);
}

#[test]
fn google_2011_shards() {
    let Some(p) = data("google-2011") else { return };
    // zcat *.gz | awk -F, '$6==1' | wc -l -> 216,225 SCHEDULE events.
    let (arr, dep, _, init) = count(&p, TraceFormat::Google2011);
    assert_eq!(arr, 216_225);
    assert!(dep <= arr && init > 0);
}

#[test]
fn alibaba_2018_sample() {
    let Some(p) = data("alibaba-2018/alibaba2018_container_meta_sample.csv") else {
        return;
    };
    // cut -d, -f1 | uniq | wc -l -> 3,861 containers; 176 `stopped` rows.
    let (arr, dep, _, init) = count(&p, TraceFormat::Alibaba2018);
    assert_eq!(arr, 3861);
    assert!(dep <= 176 && init > 0);
}

#[test]
fn bitbrains_rnd_folder() {
    let Some(p) = data("bitbrains-rnd") else {
        return;
    };
    let (arr, dep, res, init) = count(&p, TraceFormat::Bitbrains);
    assert_eq!((arr, dep), (30, 30));
    assert!(res > 0 && init > 0);
    // One VM provisions 511 GB: larger than a 192-GiB host, a counted rejection.
    let fleet: Fleet = "4x192GiB/64c".parse().unwrap();
    let opts = ReplayOptions {
        check_every_event: true,
        ..ReplayOptions::default()
    };
    let r = simulate_with(
        open_trace(&p, TraceFormat::Bitbrains, &TraceOptions::default()).unwrap(),
        &fleet,
        &PolicyKind::FragAware,
        &Fallback::Compact,
        &opts,
    )
    .unwrap();
    assert_eq!(r.rejections.get(&RejectReason::LargerThanAnyHost), Some(&1));
    assert_eq!(r.placed, 29);
}
