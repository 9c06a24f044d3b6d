//! Google cluster-data 2011 `task_events` (Reiss, Wilkes, Hellerstein, "Google cluster-usage
//! traces: format + schema", 2011). A file, or a folder of shards read in name order.
//!
//! Each task `(job_id, task_index)` is one VM. `SCHEDULE` (1) is an arrival with memory
//! `memory_request x norm_mem_bytes`; `EVICT`, `FAIL`, `FINISH`, `KILL`, `LOST` (2-6) of a running
//! task are its departure; `UPDATE_RUNNING` (8) with a new memory request is a resize. `SUBMIT`
//! and `UPDATE_PENDING` are ignored, and so are terminal events of tasks that never ran (pending
//! tasks killed). Timestamps are microseconds, truncated to seconds; timestamp 0 marks tasks
//! running when the trace starts (`initial`). Tasks share cores in the trace, so `vcpus` is 0
//! (cores are not constrained). Memory is proportional to the running tasks.

use super::{Lines, f64_to_u64, field, files_of, parse_f64, parse_u64};
use crate::event::{Event, VmTraceError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The streaming reader.
pub struct GoogleReader {
    files: std::vec::IntoIter<PathBuf>,
    cur: Option<Lines>,
    running: HashMap<(u64, u64), (u64, u64)>,
    next_vm: u64,
    norm_mem: u64,
    last_time: u64,
    /// The arrival that follows an implicit end.
    pending: Option<Event>,
}

impl GoogleReader {
    /// Opens a shard or a folder of shards.
    pub fn open(path: &Path, norm_mem_bytes: u64) -> Result<GoogleReader, VmTraceError> {
        let files = files_of(path, "task_events file")?;
        let mut files = files.into_iter();
        let first = files.next().map(|p| Lines::open(&p)).transpose()?;
        Ok(GoogleReader {
            files,
            cur: first,
            running: HashMap::new(),
            next_vm: 0,
            norm_mem: norm_mem_bytes,
            last_time: 0,
            pending: None,
        })
    }

    fn row(&mut self, l: &str) -> Result<Option<Event>, String> {
        let f: Vec<&str> = l.split(',').collect();
        let ts = parse_u64(field(&f, 0, "timestamp")?, "timestamp")?;
        let job = parse_u64(field(&f, 2, "job_id")?, "job_id")?;
        let idx = parse_u64(field(&f, 3, "task_index")?, "task_index")?;
        let ty = parse_u64(field(&f, 5, "event_type")?, "event_type")?;
        let mem_s = field(&f, 10, "memory_request")?;
        if ts == i64::MAX as u64 {
            return Ok(None); // "after the end of the trace" marker
        }
        let time = ts / 1_000_000;
        if time < self.last_time {
            return Err(format!(
                "timestamp {ts} goes back in time (previous event at {} s)",
                self.last_time
            ));
        }
        self.last_time = time;
        let mem = || -> Result<u64, String> {
            let v = parse_f64(mem_s, "memory_request")?;
            let bytes = v * self.norm_mem as f64;
            if !bytes.is_finite() || bytes >= 1.8e19 {
                return Err(format!(
                    "memory_request {v} x --norm-mem is beyond 2^64 bytes (normalized values are \
                     at most 1)"
                ));
            }
            Ok(f64_to_u64(bytes))
        };
        Ok(match ty {
            1 => {
                let mem = mem()?;
                let vm = self.next_vm;
                self.next_vm += 1;
                let arrival = Event::Arrival {
                    vm,
                    time,
                    mem_bytes: mem,
                    vcpus: 0,
                    initial: ts == 0,
                };
                // Scheduled while running: the end of the previous run lies in a shard that is
                // not read (shards that are not consecutive). It ends now, implicitly.
                match self.running.insert((job, idx), (vm, mem)) {
                    Some((old, _)) => {
                        self.pending = Some(arrival);
                        Some(Event::ImplicitEnd { vm: old, time })
                    }
                    None => Some(arrival),
                }
            }
            2..=6 => self
                .running
                .remove(&(job, idx))
                .map(|(vm, _)| Event::Departure { vm, time }),
            8 => match self.running.get_mut(&(job, idx)) {
                Some((vm, old)) if !mem_s.trim().is_empty() => {
                    let m = f64_to_u64(parse_f64(mem_s, "memory_request")? * self.norm_mem as f64);
                    if m == *old {
                        None
                    } else {
                        *old = m;
                        Some(Event::Resize {
                            vm: *vm,
                            time,
                            mem_bytes: m,
                        })
                    }
                }
                _ => None,
            },
            0 | 7 => None,
            other => return Err(format!("unknown event_type {other}")),
        })
    }
}

impl Iterator for GoogleReader {
    type Item = Result<Event, VmTraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Ok(e));
        }
        loop {
            let cur = self.cur.as_mut()?;
            match cur.next_line() {
                None => match self.files.next().map(|p| Lines::open(&p)) {
                    None => {
                        self.cur = None;
                        return None;
                    }
                    Some(Ok(l)) => self.cur = Some(l),
                    Some(Err(e)) => {
                        self.cur = None;
                        return Some(Err(e));
                    }
                },
                Some(Err(e)) => {
                    self.cur = None;
                    return Some(Err(e));
                }
                Some(Ok(l)) => {
                    if l.trim().is_empty() {
                        continue;
                    }
                    let l = l.to_owned();
                    let (path, line) = (cur.path.clone(), cur.line);
                    match self.row(&l) {
                        Ok(Some(e)) => return Some(Ok(e)),
                        Ok(None) => {}
                        Err(reason) => return Some(Err(VmTraceError::Row { path, line, reason })),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of the trace folder `dir` (which must read without error).
    fn all_events(dir: &std::path::Path) -> Vec<Event> {
        GoogleReader::open(dir, 1 << 30)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("task_events-part-00000.csv");
        std::fs::write(
            &p,
            "0,,1,0,m,0,u,0,0,0.1,0.5,0,0\n0,,1,0,m,1,u,0,0,0.1,0.5,0,0\n\
             2000000,,1,1,,5,u,0,0,0.1,0.25,0,0\n3000000,,1,0,m,8,u,0,0,0.1,0.25,0,0\n\
             4000000,,1,0,m,4,u,0,0,0.1,0.25,0,0\n",
        )
        .unwrap();
        let ev = all_events(dir.path());
        assert_eq!(
            ev,
            vec![
                Event::Arrival {
                    vm: 0,
                    time: 0,
                    mem_bytes: 512 << 20,
                    vcpus: 0,
                    initial: true
                },
                Event::Resize {
                    vm: 0,
                    time: 3,
                    mem_bytes: 256 << 20
                },
                Event::Departure { vm: 0, time: 4 },
            ]
        );
    }

    #[test]
    fn a_task_scheduled_while_running_ends_its_previous_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("task_events-part-00000-of-00500.csv"),
            "0,,1,0,m,1,u,0,0,0.1,0.5,0,0\n",
        )
        .unwrap();
        // Shard 00001 (with the task's end) is missing.
        std::fs::write(
            dir.path().join("task_events-part-00002-of-00500.csv"),
            "7000000,,1,0,m,1,u,0,0,0.1,0.25,0,0\n8000000,,1,0,m,4,u,0,0,0.1,0.25,0,0\n",
        )
        .unwrap();
        let ev = all_events(dir.path());
        assert_eq!(
            ev,
            vec![
                Event::Arrival {
                    vm: 0,
                    time: 0,
                    mem_bytes: 512 << 20,
                    vcpus: 0,
                    initial: true
                },
                Event::ImplicitEnd { vm: 0, time: 7 },
                Event::Arrival {
                    vm: 1,
                    time: 7,
                    mem_bytes: 256 << 20,
                    vcpus: 0,
                    initial: false
                },
                Event::Departure { vm: 1, time: 8 },
            ]
        );
    }

    #[test]
    fn bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "5000000,,1,0,m,1,u,0,0,0.1,0.5,0,0\n1000000,,1,1,m,1,u,0,0,0.1,0.5,0,0\n-1,,1,2,m,1,u\n").unwrap();
        let out: Vec<_> = GoogleReader::open(&p, 1 << 30).unwrap().collect();
        let e1 = out[1].as_ref().unwrap_err().to_string();
        assert!(e1.contains("line 2") && e1.contains("back in time"), "{e1}");
        let e2 = out[2].as_ref().unwrap_err().to_string();
        assert!(
            e2.contains("line 3") && e2.contains("negative timestamp"),
            "{e2}"
        );
    }
}
