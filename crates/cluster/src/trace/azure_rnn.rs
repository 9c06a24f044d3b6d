//! Azure V1 re-encoded as flavor and duration streams (Bergsma et al., SOSP 2021,
//! huaweicloud/trace_generation_rnn), over the Azure Public Dataset V1 (Cortez et al., SOSP 2017).
//!
//! A trace is four files in one folder: `flav_map.txt` (`VCPUS,MEMORY_GB LETTER`),
//! `*.interval_map.txt` (`SECONDS BIN`), the flavor stream `NAME.txt` and the duration stream
//! `NAME.c<CUTOFF>.txt`, token for token the same shape (`T tok,tok,|,tok...`). Rules:
//! - a VM arrives at the `T` of its line (the end of the 300 s bin it arrived in);
//! - `U<k>` ended before the cut-off with a lifetime in bin `k`, where bin `k` covers
//!   `[first second mapped to k, first second mapped to k+1)` in the interval map (the last bin is
//!   one day wide); the lifetime inside the bin follows [`DurationRule`];
//! - `C<k>` is right-censored (still running at the cut-off): no departure is emitted, the VM
//!   stays until the end of the replay;
//! - `|` closes a tenant batch and carries no VM.

use super::merge::{DepartureMerger, VmTraceRecord};
use super::{Lines, gb_to_bytes, list_dir, parse_f64, parse_u64};
use crate::event::{Event, VmTraceError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where inside its duration bin a lifetime is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationRule {
    /// The bin's lower edge (shortest possible lifetime).
    Lower,
    /// The bin's midpoint.
    Mid,
    /// A uniform whole-second draw in the bin, from a ChaCha8 stream seeded by the run's seed and
    /// consumed in trace order.
    Uniform,
}

impl FromStr for DurationRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lower" => Ok(DurationRule::Lower),
            "mid" => Ok(DurationRule::Mid),
            "uniform" => Ok(DurationRule::Uniform),
            other => Err(format!(
                "unknown duration rule '{other}': valid values are lower, mid, uniform"
            )),
        }
    }
}

/// The files of one `azure-rnn` trace.
#[derive(Clone, Debug)]
struct RnnFiles {
    flavors: PathBuf,
    durations: PathBuf,
    flav_map: PathBuf,
    interval_map: PathBuf,
}

fn locate(path: &Path) -> Result<RnnFiles, VmTraceError> {
    let layout = |reason: String| VmTraceError::Layout {
        path: path.to_path_buf(),
        reason,
    };
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let files = list_dir(&dir)?;
    let name = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned()
    };
    let is_dur = |n: &str| {
        n.strip_suffix(".txt")
            .and_then(|s| s.rsplit_once(".c"))
            .is_some_and(|(_, c)| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
    };
    let flavors = if path.is_dir() {
        let cands: Vec<&PathBuf> = files
            .iter()
            .filter(|p| {
                let n = name(p);
                n.ends_with(".txt")
                    && !is_dur(&n)
                    && n != "flav_map.txt"
                    && !n.ends_with("interval_map.txt")
            })
            .collect();
        match cands.as_slice() {
            [one] => (*one).clone(),
            _ => {
                return Err(layout(format!(
                    "expected exactly one flavor stream (*.txt) in the folder, found {}",
                    cands.len()
                )));
            }
        }
    } else {
        path.to_path_buf()
    };
    let stem = name(&flavors).trim_end_matches(".txt").to_owned();
    let durations = files
        .iter()
        .find(|p| {
            let n = name(p);
            is_dur(&n) && n.starts_with(&format!("{stem}.c"))
        })
        .cloned()
        .ok_or_else(|| {
            layout(format!(
                "no duration stream {stem}.c<CUTOFF>.txt beside the flavor stream"
            ))
        })?;
    let interval_map = files
        .iter()
        .find(|p| name(p).ends_with("interval_map.txt"))
        .cloned()
        .ok_or_else(|| layout("no *interval_map.txt in the folder".into()))?;
    let flav_map = dir.join("flav_map.txt");
    if !flav_map.is_file() {
        return Err(layout("no flav_map.txt in the folder".into()));
    }
    Ok(RnnFiles {
        flavors,
        durations,
        flav_map,
        interval_map,
    })
}

/// Flavor letter -> (vcpus, bytes), indexed by letter byte.
fn read_flavors(path: &Path) -> Result<Vec<Option<(u32, u64)>>, VmTraceError> {
    let mut lines = Lines::open(path)?;
    let mut map = vec![None; 256];
    while let Some(l) = lines.next_line() {
        let l = l?.trim().to_owned();
        if l.is_empty() {
            continue;
        }
        let bad = |r: String| VmTraceError::row(path, lines.line, r);
        let (spec, letter) = l
            .split_once(' ')
            .ok_or_else(|| bad(format!("expected 'VCPUS,MEMORY_GB LETTER', got '{l}'")))?;
        let (c, m) = spec
            .split_once(',')
            .ok_or_else(|| bad(format!("missing column MEMORY_GB in '{l}'")))?;
        let vcpus = u32::try_from(parse_u64(c, "vcpus").map_err(bad)?)
            .map_err(|_| bad(format!("bad vcpus '{c}'")))?;
        let mem = gb_to_bytes(parse_f64(m, "memory").map_err(bad)?, "memory", m).map_err(bad)?;
        let letter = letter.trim();
        if letter.len() != 1 {
            return Err(bad(format!("flavor name '{letter}' must be one letter")));
        }
        map[usize::from(letter.as_bytes()[0])] = Some((vcpus, mem));
    }
    Ok(map)
}

/// Width in seconds of the last duration bin (one day).
const LAST_BIN_WIDTH: u64 = 86_400;

/// Bin k -> [lo, hi).
fn read_bins(path: &Path) -> Result<Vec<(u64, u64)>, VmTraceError> {
    let mut lines = Lines::open(path)?;
    let mut first: Vec<Option<u64>> = Vec::new();
    while let Some(l) = lines.next_line() {
        let l = l?.trim().to_owned();
        if l.is_empty() {
            continue;
        }
        let bad = |r: String| VmTraceError::row(path, lines.line, r);
        let (s, b) = l
            .split_once(' ')
            .ok_or_else(|| bad(format!("expected 'SECONDS BIN', got '{l}'")))?;
        let raw = s;
        let s = parse_u64(s, "seconds").map_err(bad)?;
        if s.checked_add(LAST_BIN_WIDTH + 1).is_none() {
            return Err(bad(format!(
                "seconds '{}' too large: a bin starting there would end past 2^64 s",
                raw.trim()
            )));
        }
        let b = usize::try_from(parse_u64(b, "bin").map_err(bad)?)
            .map_err(|_| bad("bin too large".into()))?;
        if b > 100_000 {
            return Err(bad(format!("bin {b} too large")));
        }
        if first.len() <= b {
            first.resize(b + 1, None);
        }
        let e = &mut first[b];
        *e = Some(e.map_or(s, |x: u64| x.min(s)));
    }
    let lo: Vec<u64> = first
        .iter()
        .enumerate()
        .map(|(k, x)| {
            x.ok_or_else(|| VmTraceError::Layout {
                path: path.to_path_buf(),
                reason: format!("duration bin {k} has no entry"),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((0..lo.len())
        .map(|k| {
            (
                lo[k],
                lo.get(k + 1)
                    .copied()
                    .unwrap_or(lo[k] + LAST_BIN_WIDTH)
                    .max(lo[k] + 1),
            )
        })
        .collect())
}

/// The streaming reader.
pub struct AzureRnnReader {
    merger: DepartureMerger<RnnRecords>,
}

impl AzureRnnReader {
    /// Opens the trace at `path` (its folder, or its flavor stream file).
    pub fn open(
        path: &Path,
        rule: DurationRule,
        seed: u64,
    ) -> Result<AzureRnnReader, VmTraceError> {
        let files = locate(path)?;
        let recs = RnnRecords {
            flavors: read_flavors(&files.flav_map)?,
            bins: read_bins(&files.interval_map)?,
            flav: Lines::open(&files.flavors)?,
            dur: Lines::open(&files.durations)?,
            queue: VecDeque::new(),
            rule,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_vm: 0,
            done: false,
        };
        Ok(AzureRnnReader {
            merger: DepartureMerger::new(recs, files.flavors),
        })
    }
}

impl Iterator for AzureRnnReader {
    type Item = Result<Event, VmTraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.merger.next()
    }
}

struct RnnRecords {
    flavors: Vec<Option<(u32, u64)>>,
    bins: Vec<(u64, u64)>,
    flav: Lines,
    dur: Lines,
    queue: VecDeque<(u64, VmTraceRecord)>,
    rule: DurationRule,
    rng: ChaCha8Rng,
    next_vm: u64,
    done: bool,
}

impl RnnRecords {
    fn lifetime(&mut self, bin: usize) -> Option<u64> {
        let (lo, hi) = *self.bins.get(bin)?;
        Some(match self.rule {
            DurationRule::Lower => lo,
            DurationRule::Mid => lo + (hi - lo) / 2,
            DurationRule::Uniform if hi > lo => self.rng.gen_range(lo..hi),
            DurationRule::Uniform => lo,
        })
    }

    /// Reads one line pair into the queue.
    fn fill(&mut self) -> Result<bool, VmTraceError> {
        let (fl, dl) = match (self.flav.next_line(), self.dur.next_line()) {
            (None, None) => return Ok(false),
            (Some(a), Some(b)) => (a?.to_owned(), b?.to_owned()),
            (Some(_), None) | (None, Some(_)) => {
                return Err(VmTraceError::row(
                    &self.flav.path,
                    self.flav.line,
                    "the flavor and duration streams have different numbers of lines",
                ));
            }
        };
        let line = self.flav.line;
        let fpath = self.flav.path.clone();
        let bad = |r: String| VmTraceError::row(&fpath, line, r);
        if fl.trim().is_empty() {
            return Ok(true);
        }
        let (t, ftoks) = fl.split_once(' ').unwrap_or((fl.as_str(), ""));
        let (t2, dtoks) = dl.split_once(' ').unwrap_or((dl.as_str(), ""));
        let time = parse_u64(t, "time").map_err(bad)?;
        if t.trim() != t2.trim() {
            return Err(bad(format!(
                "time {t} differs from the duration stream's time {t2}"
            )));
        }
        let ft: Vec<&str> = tokens(ftoks).collect();
        let dt: Vec<&str> = tokens(dtoks).collect();
        if ft.len() != dt.len() {
            return Err(bad(format!(
                "{} flavor tokens but {} duration tokens",
                ft.len(),
                dt.len()
            )));
        }
        for (f, d) in ft.into_iter().zip(dt) {
            if f == "|" || d == "|" {
                if f != d {
                    return Err(bad(format!(
                        "batch marker mismatch: flavor '{f}' vs duration '{d}'"
                    )));
                }
                continue;
            }
            let fb = f.as_bytes();
            let (vcpus, mem) = match (fb.len(), fb.first()) {
                (1, Some(&b)) => self.flavors[usize::from(b)],
                _ => None,
            }
            .ok_or_else(|| bad(format!("unknown flavor '{f}'")))?;
            if let Some((censored, bin)) = fast_duration(d) {
                let departure = if censored {
                    None
                } else {
                    let life = self.lifetime(bin).ok_or_else(|| {
                        bad(format!(
                            "duration bin {bin} of '{d}' is not in the interval map"
                        ))
                    })?;
                    Some(time.saturating_add(life))
                };
                self.push(line, time, departure, mem, vcpus);
                continue;
            }
            let kind_len = d.chars().next().map_or(0, char::len_utf8);
            let (kind, bin) = d.split_at(kind_len);
            if kind != "U" && kind != "C" {
                return Err(bad(format!(
                    "bad duration token '{d}': expected U<bin> or C<bin>"
                )));
            }
            let bin = usize::try_from(
                parse_u64(bin, "duration bin")
                    .map_err(|r| bad(format!("bad duration token '{d}': {r}")))?,
            )
            .map_err(|_| bad(format!("bad duration '{d}'")))?;
            let departure = match kind {
                "U" => {
                    let life = self.lifetime(bin).ok_or_else(|| {
                        bad(format!(
                            "duration bin {bin} of '{d}' is not in the interval map"
                        ))
                    })?;
                    Some(time.saturating_add(life))
                }
                "C" => None,
                _ => {
                    return Err(bad(format!(
                        "bad duration token '{d}': expected U<bin> or C<bin>"
                    )));
                }
            };
            self.push(line, time, departure, mem, vcpus);
        }
        Ok(true)
    }

    /// Queues the next VM of the trace.
    fn push(&mut self, line: u64, time: u64, departure: Option<u64>, mem: u64, vcpus: u32) {
        let vm = self.next_vm;
        self.next_vm += 1;
        self.queue.push_back((
            line,
            VmTraceRecord {
                vm,
                arrival: time,
                departure,
                mem_bytes: mem,
                vcpus,
                initial: false,
            },
        ));
    }
}

/// The non-empty comma-separated tokens of `s`, trimmed: the same as
/// `s.split(',').map(str::trim).filter(|t| !t.is_empty())`, with a byte scan and no Unicode
/// trimming for the usual plain ASCII token (a `,` byte never occurs inside a UTF-8 sequence).
fn tokens(s: &str) -> impl Iterator<Item = &str> {
    let plain = |b: u8| b.is_ascii() && !b.is_ascii_whitespace() && b != 0x0b;
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == b',') {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
    .map(move |t| match (t.as_bytes().first(), t.as_bytes().last()) {
        (Some(&a), Some(&z)) if plain(a) && plain(z) => t,
        _ => t.trim(),
    })
    .filter(|t| !t.is_empty())
}

/// `U<bin>` or `C<bin>` with a plain decimal bin of at most 18 digits: `(censored, bin)`. Any
/// other token (including every malformed one) takes the general path, which reports errors.
#[inline]
fn fast_duration(d: &str) -> Option<(bool, usize)> {
    let (&k, digits) = d.as_bytes().split_first()?;
    if (k != b'U' && k != b'C') || digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n = 0u64;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some((k == b'C', usize::try_from(n).ok()?))
}

impl Iterator for RnnRecords {
    type Item = Result<(u64, VmTraceRecord), VmTraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(e) => {
                    if !e.is_row_error() || self.flav.line != self.dur.line {
                        self.done = true;
                    }
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The byte tokenizer against the naive split / trim / filter it replaces, on strings
        /// drawn from commas, ASCII and Unicode whitespace (VT, NBSP, NEL) and token bytes.
        #[test]
        fn tokens_match_the_naive_split(s in "[,a-zU0-9| \t\u{0b}\u{0c}\u{a0}\u{85}\u{1f}é]{0,40}") {
            let naive: Vec<&str> = s.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
            prop_assert_eq!(tokens(&s).collect::<Vec<_>>(), naive);
        }

        /// The duration fast path agrees with the general parse whenever it answers.
        #[test]
        fn fast_duration_matches_the_general_parse(d in "[UCX]?[0-9a. +-]{0,22}") {
            if let Some((censored, bin)) = fast_duration(&d) {
                prop_assert_eq!(censored, d.starts_with('C'));
                prop_assert_eq!(Ok(bin as u64), parse_u64(&d[1..], "duration bin"));
            } else {
                let plain = d.len() > 1 && d.len() <= 19 && (d.starts_with('U') || d.starts_with('C'))
                    && d[1..].bytes().all(|b| b.is_ascii_digit());
                prop_assert!(!plain, "fast path refused {}", d);
            }
        }
    }

    /// Writes a tiny azure-rnn trace into `dir`.
    pub(crate) fn fixture(dir: &Path) {
        std::fs::write(dir.join("flav_map.txt"), "1,0.75 a\n2,4 b\n").unwrap();
        std::fs::write(
            dir.join("v1.interval_map.txt"),
            "0 0\n300 1\n600 2\n900 2\n1200 3\n",
        )
        .unwrap();
        std::fs::write(dir.join("x.txt"), "100 a,|,b,b,|\n400 a,|\n").unwrap();
        std::fs::write(dir.join("x.c1000.txt"), "100 U0,|,U2,C1,|\n400 U1,|\n").unwrap();
    }

    #[test]
    fn rules_and_order() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let ev: Vec<Event> = AzureRnnReader::open(dir.path(), DurationRule::Lower, 1)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // VM0 a at 100 for [0,300) lower 0 -> departs at 100; VM1 b at 100, bin 2 = [600,1200) -> 700;
        // VM2 b censored; VM3 a at 400, bin 1 = [300,600) -> 700.
        let a = |vm, time, mem: u64, vcpus| Event::Arrival {
            vm,
            time,
            mem_bytes: mem,
            vcpus,
            initial: false,
        };
        assert_eq!(
            ev,
            vec![
                a(0, 100, 768 << 20, 1),
                Event::Departure { vm: 0, time: 100 },
                a(1, 100, 4 << 30, 2),
                a(2, 100, 4 << 30, 2),
                a(3, 400, 768 << 20, 1),
                Event::Departure { vm: 1, time: 700 },
                Event::Departure { vm: 3, time: 700 },
            ]
        );
        let mid: Vec<Event> = AzureRnnReader::open(&dir.path().join("x.txt"), DurationRule::Mid, 1)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(mid.contains(&Event::Departure { vm: 1, time: 1000 }));
        // Uniform draws stay inside the bins and depend on the seed only.
        let u1: Vec<Event> = AzureRnnReader::open(dir.path(), DurationRule::Uniform, 7)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let u2: Vec<Event> = AzureRnnReader::open(dir.path(), DurationRule::Uniform, 7)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(u1, u2);
        for e in &u1 {
            if let Event::Departure { vm: 1, time } = e {
                assert!((700..1300).contains(time));
            }
        }
    }

    #[test]
    fn mismatched_streams_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        std::fs::write(dir.path().join("x.c1000.txt"), "100 U0,|,U2,|\n400 U9,|\n").unwrap();
        let out: Vec<_> = AzureRnnReader::open(dir.path(), DurationRule::Lower, 1)
            .unwrap()
            .collect();
        let errs: Vec<String> = out
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert!(
            errs[0].contains("line 1") && errs[0].contains("5 flavor tokens but 4"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("line 2") && errs[1].contains("bin 9"),
            "{errs:?}"
        );
    }

    fn errors_of(dir: &Path, rule: DurationRule) -> Vec<String> {
        match AzureRnnReader::open(dir, rule, 1) {
            Err(e) => vec![e.to_string()],
            Ok(r) => r.filter_map(|r| r.err().map(|e| e.to_string())).collect(),
        }
    }

    #[test]
    fn non_ascii_duration_token_is_a_row_error() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        std::fs::write(
            dir.path().join("x.c1000.txt"),
            "100 éU0,|,U2,C1,|\n400 U1,|\n",
        )
        .unwrap();
        let errs = errors_of(dir.path(), DurationRule::Lower);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("x.txt") && errs[0].contains("line 1") && errs[0].contains("'éU0'"),
            "{errs:?}"
        );
    }

    #[test]
    fn huge_interval_map_second_is_a_row_error() {
        for rule in [
            DurationRule::Lower,
            DurationRule::Mid,
            DurationRule::Uniform,
        ] {
            let dir = tempfile::tempdir().unwrap();
            fixture(dir.path());
            let huge = u64::MAX - 10;
            std::fs::write(
                dir.path().join("v1.interval_map.txt"),
                format!("0 0\n300 1\n600 2\n{huge} 3\n"),
            )
            .unwrap();
            let errs = errors_of(dir.path(), rule);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0].contains("v1.interval_map.txt")
                    && errs[0].contains("line 4")
                    && errs[0].contains(&huge.to_string()),
                "{errs:?}"
            );
        }
    }

    #[test]
    fn huge_flavor_memory_is_a_row_error() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        std::fs::write(
            dir.path().join("flav_map.txt"),
            "1,0.75 a\n2,17592186044416 b\n",
        )
        .unwrap();
        let errs = errors_of(dir.path(), DurationRule::Lower);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("flav_map.txt")
                && errs[0].contains("line 2")
                && errs[0].contains("17592186044416")
                && errs[0].contains("too large"),
            "{errs:?}"
        );
    }
}
