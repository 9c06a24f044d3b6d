//! Bitbrains GWA-T-12 (Shen et al., "Statistical characterization of business-critical workloads
//! hosted in cloud datacenters", CCGrid 2015): a folder of per-VM files (plain or gzip), 5-minute
//! samples, header line, fields separated by `;` and a tab. Columns used: `Timestamp [ms]` (really
//! seconds since the epoch), `CPU cores`, `Memory capacity provisioned [KB]`.
//!
//! Each file is one VM: it arrives at its first sample, a change of provisioned memory is a
//! resize, and it departs at its last sample. Times are rebased so the earliest sample of the
//! folder is 0; VMs whose first sample is that instant were running when the trace starts. Files
//! are merged with a k-way merge (one open reader per file, memory proportional to the VMs).

use super::{Lines, field, files_of, kb_to_bytes, parse_f64, parse_u64};
use crate::event::{Event, VmTraceError};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

struct VmFile {
    lines: Lines,
    vm: u64,
    started: bool,
    mem: u64,
    last_time: Option<u64>,
    done: bool,
}

impl VmFile {
    /// Next raw event (absolute time) of this VM.
    fn next_event(&mut self) -> Option<Result<Event, VmTraceError>> {
        loop {
            if self.done {
                return None;
            }
            let l = match self.lines.next_line() {
                None => {
                    self.done = true;
                    return self.last_time.filter(|_| self.started).map(|t| {
                        Ok(Event::Departure {
                            vm: self.vm,
                            time: t,
                        })
                    });
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(l)) => l.to_owned(),
            };
            if l.trim().is_empty() || (self.lines.line == 1 && l.starts_with("Timestamp")) {
                continue;
            }
            let f: Vec<&str> = l.split(';').map(str::trim).collect();
            let parsed = (|| -> Result<(u64, u32, u64), String> {
                let t = parse_u64(field(&f, 0, "Timestamp")?, "timestamp")?;
                let cores = u32::try_from(parse_u64(field(&f, 1, "CPU cores")?, "CPU cores")?)
                    .map_err(|_| "too many CPU cores".to_owned())?;
                let kb_s = field(&f, 5, "Memory capacity provisioned [KB]")?;
                let kb = parse_f64(kb_s, "provisioned memory")?;
                Ok((t, cores, kb_to_bytes(kb, "provisioned memory", kb_s)?))
            })();
            let (t, cores, mem) = match parsed {
                Ok(x) => x,
                Err(reason) => {
                    return Some(Err(VmTraceError::row(
                        &self.lines.path,
                        self.lines.line,
                        reason,
                    )));
                }
            };
            if let Some(last) = self.last_time
                && t < last
            {
                return Some(Err(VmTraceError::row(
                    &self.lines.path,
                    self.lines.line,
                    format!("timestamp {t} before the previous sample {last}"),
                )));
            }
            self.last_time = Some(t);
            if !self.started {
                self.started = true;
                self.mem = mem;
                return Some(Ok(Event::Arrival {
                    vm: self.vm,
                    time: t,
                    mem_bytes: mem,
                    vcpus: cores,
                    initial: false,
                }));
            }
            if mem != self.mem {
                self.mem = mem;
                return Some(Ok(Event::Resize {
                    vm: self.vm,
                    time: t,
                    mem_bytes: mem,
                }));
            }
        }
    }
}

/// The k-way merging reader.
pub struct BitbrainsReader {
    files: Vec<VmFile>,
    heap: BinaryHeap<Reverse<(u64, u8, usize)>>,
    heads: Vec<Option<Event>>,
    errors: Vec<VmTraceError>,
    origin: u64,
}

fn order(e: &Event) -> u8 {
    match e {
        Event::Departure { .. } | Event::ImplicitEnd { .. } => 0,
        Event::Resize { .. } => 1,
        Event::Arrival { .. } => 2,
    }
}

impl BitbrainsReader {
    /// Opens a folder of per-VM files (or a single file).
    pub fn open(path: &Path) -> Result<BitbrainsReader, VmTraceError> {
        let paths = files_of(path, "per-VM file")?;
        let mut r = BitbrainsReader {
            files: Vec::new(),
            heap: BinaryHeap::new(),
            heads: Vec::new(),
            errors: Vec::new(),
            origin: 0,
        };
        for (i, p) in paths.iter().enumerate() {
            r.files.push(VmFile {
                lines: Lines::open(p)?,
                vm: i as u64,
                started: false,
                mem: 0,
                last_time: None,
                done: false,
            });
            r.heads.push(None);
            r.advance(i);
        }
        r.origin = r.heap.peek().map_or(0, |Reverse((t, _, _))| *t);
        Ok(r)
    }

    fn advance(&mut self, i: usize) {
        loop {
            match self.files[i].next_event() {
                None => return,
                Some(Err(e)) => {
                    let fatal = !e.is_row_error();
                    self.errors.push(e);
                    if fatal {
                        return;
                    }
                }
                Some(Ok(e)) => {
                    self.heap.push(Reverse((e.time(), order(&e), i)));
                    self.heads[i] = Some(e);
                    return;
                }
            }
        }
    }
}

impl Iterator for BitbrainsReader {
    type Item = Result<Event, VmTraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.errors.pop() {
            return Some(Err(e));
        }
        let Reverse((_, _, i)) = self.heap.pop()?;
        let e = self.heads[i].take()?;
        self.advance(i);
        let o = self.origin;
        Some(Ok(match e {
            Event::Arrival {
                vm,
                time,
                mem_bytes,
                vcpus,
                ..
            } => Event::Arrival {
                vm,
                time: time.saturating_sub(o),
                mem_bytes,
                vcpus,
                initial: time == o,
            },
            Event::Departure { vm, time } | Event::ImplicitEnd { vm, time } => Event::Departure {
                vm,
                time: time.saturating_sub(o),
            },
            Event::Resize {
                vm,
                time,
                mem_bytes,
            } => Event::Resize {
                vm,
                time: time.saturating_sub(o),
                mem_bytes,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: &str = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB]\n";

    #[test]
    fn merge_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.csv"), format!("{HDR}1000;\t2;\t1;\t1;\t1;\t1048576.0;\t1\n1300;\t2;\t1;\t1;\t1;\t2097152.0;\t1\n1600;\t2;\t1;\t1;\t1;\t2097152.0;\t1\n")).unwrap();
        std::fs::write(
            dir.path().join("2.csv"),
            format!(
                "{HDR}1300;\t4;\t1;\t1;\t1;\t4194304;\t1\n1500;\t4;\t1;\t1;\t1;\t4194304;\t1\n"
            ),
        )
        .unwrap();
        let ev: Vec<Event> = BitbrainsReader::open(dir.path())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            ev,
            vec![
                Event::Arrival {
                    vm: 0,
                    time: 0,
                    mem_bytes: 1 << 30,
                    vcpus: 2,
                    initial: true
                },
                Event::Resize {
                    vm: 0,
                    time: 300,
                    mem_bytes: 2 << 30
                },
                Event::Arrival {
                    vm: 1,
                    time: 300,
                    mem_bytes: 4 << 30,
                    vcpus: 4,
                    initial: false
                },
                Event::Departure { vm: 1, time: 500 },
                Event::Departure { vm: 0, time: 600 },
            ]
        );
    }

    #[test]
    fn huge_memory_is_a_row_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("1.csv");
        std::fs::write(
            &p,
            format!("{HDR}1000;\t2;\t1;\t1;\t1;\t18014398509481984;\t1\n"),
        )
        .unwrap();
        let msgs: Vec<String> = BitbrainsReader::open(&p)
            .unwrap()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].contains("1.csv")
                && msgs[0].contains("line 2")
                && msgs[0].contains("'18014398509481984' too large"),
            "{msgs:?}"
        );
    }
}
