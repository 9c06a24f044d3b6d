//! Alibaba cluster-trace-v2018 `container_meta` (`container_id, machine_id, time_stamp, app_du,
//! status, cpu_request, cpu_limit, mem_size`; cpu in 1/100 core, mem_size normalized to 0-100).
//!
//! The table is a series of snapshots sorted by container, not by time, so this reader loads the
//! rows (grouped per container), then emits time-sorted events: the first snapshot of a container
//! is its arrival (time 0: running when the trace starts), a changed `mem_size` is a resize, a
//! `stopped` snapshot is its departure (later snapshots ignored). A container never seen stopped
//! stays until the end. Memory is `mem_size / 100 x norm_mem_bytes`; vCPUs `ceil(cpu_request/100)`.
//! Memory is proportional to the table, which is fine for the public samples.

use super::{Lines, f64_to_u64, field, parse_f64, parse_u64};
use crate::event::{Event, VmTraceError};
use std::collections::BTreeMap;
use std::path::Path;

/// The reader (events are prepared at open).
pub struct AlibabaReader {
    items: std::vec::IntoIter<Result<Event, VmTraceError>>,
}

struct Snap {
    time: u64,
    stopped: bool,
    mem: u64,
    vcpus: u32,
}

impl AlibabaReader {
    /// Reads the table.
    pub fn open(path: &Path, norm_mem_bytes: u64) -> Result<AlibabaReader, VmTraceError> {
        let mut lines = Lines::open(path)?;
        let mut by_container: BTreeMap<String, Vec<Snap>> = BTreeMap::new();
        let mut out: Vec<Result<Event, VmTraceError>> = Vec::new();
        while let Some(l) = lines.next_line() {
            let l = l?.to_owned();
            if l.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split(',').collect();
            if lines.line == 1 && f.get(2).is_some_and(|x| x.trim() == "time_stamp") {
                continue;
            }
            let parsed = (|| -> Result<(String, Snap), String> {
                let id = field(&f, 0, "container_id")?.trim().to_owned();
                let time = parse_u64(field(&f, 2, "time_stamp")?, "time_stamp")?;
                let status = field(&f, 4, "status")?.trim();
                // The statuses of the 2018 release; anything else would never depart.
                if !matches!(status, "started" | "allocated" | "stopped") {
                    return Err(format!(
                        "status '{}' is not started, allocated or stopped",
                        status.chars().take(40).collect::<String>()
                    ));
                }
                let cpu = parse_f64(field(&f, 5, "cpu_request")?, "cpu_request")?;
                let mem = parse_f64(field(&f, 7, "mem_size")?, "mem_size")?;
                if mem > 100.0 {
                    return Err(format!(
                        "mem_size '{mem}' above 100 (it is normalized to 0-100)"
                    ));
                }
                let vcpus = u32::try_from(f64_to_u64((cpu / 100.0).ceil()))
                    .map_err(|_| format!("bad cpu_request '{cpu}'"))?;
                Ok((
                    id,
                    Snap {
                        time,
                        stopped: status == "stopped",
                        mem: f64_to_u64(mem / 100.0 * norm_mem_bytes as f64),
                        vcpus,
                    },
                ))
            })();
            match parsed {
                Ok((id, s)) => by_container.entry(id).or_default().push(s),
                Err(reason) => out.push(Err(VmTraceError::row(path, lines.line, reason))),
            }
        }
        // (time, order within the time: departures 0, resizes 1, arrivals 2, sequence) -> event
        let mut evs: Vec<((u64, u8, u64), Event)> = Vec::new();
        let mut seq = 0u64;
        for (vm, snaps) in by_container.into_values().enumerate() {
            let vm = vm as u64;
            let mut snaps = snaps;
            snaps.sort_by_key(|s| s.time);
            let first = &snaps[0];
            let mut mem = first.mem;
            evs.push((
                (first.time, 2, seq),
                Event::Arrival {
                    vm,
                    time: first.time,
                    mem_bytes: mem,
                    vcpus: first.vcpus,
                    initial: first.time == 0,
                },
            ));
            seq += 1;
            for s in &snaps[1..] {
                if s.stopped {
                    evs.push(((s.time, 0, seq), Event::Departure { vm, time: s.time }));
                    seq += 1;
                    break;
                }
                if s.mem != mem {
                    mem = s.mem;
                    evs.push((
                        (s.time, 1, seq),
                        Event::Resize {
                            vm,
                            time: s.time,
                            mem_bytes: mem,
                        },
                    ));
                    seq += 1;
                }
            }
            if first.stopped && snaps.len() == 1 {
                evs.push((
                    (first.time, 3, seq),
                    Event::Departure {
                        vm,
                        time: first.time,
                    },
                ));
                seq += 1;
            }
        }
        evs.sort_by_key(|(k, _)| *k);
        out.extend(evs.into_iter().map(|(_, e)| Ok(e)));
        Ok(AlibabaReader {
            items: out.into_iter(),
        })
    }
}

impl Iterator for AlibabaReader {
    type Item = Result<Event, VmTraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.items.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_to_events() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.csv");
        std::fs::write(&p, "c_2,m,10,a,started,400,400,50\nc_1,m,0,a,started,400,400,25\nc_1,m,20,a,started,400,400,50\nc_1,m,30,a,stopped,400,400,50\nc_3,m,5,a,started,150,400,-1\n").unwrap();
        let out: Vec<_> = AlibabaReader::open(&p, 1 << 30).unwrap().collect();
        assert!(out[0].as_ref().unwrap_err().to_string().contains("line 5"));
        let ev: Vec<Event> = out.into_iter().skip(1).map(Result::unwrap).collect();
        assert_eq!(
            ev,
            vec![
                Event::Arrival {
                    vm: 0,
                    time: 0,
                    mem_bytes: 256 << 20,
                    vcpus: 4,
                    initial: true
                },
                Event::Arrival {
                    vm: 1,
                    time: 10,
                    mem_bytes: 512 << 20,
                    vcpus: 4,
                    initial: false
                },
                Event::Resize {
                    vm: 0,
                    time: 20,
                    mem_bytes: 512 << 20
                },
                Event::Departure { vm: 0, time: 30 },
            ]
        );
    }
}
