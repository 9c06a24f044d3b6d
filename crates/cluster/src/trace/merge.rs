//! Turns a stream of VM records sorted by arrival into time-ordered arrival and departure events.
//! Pending departures wait in a binary heap, so memory is proportional to the live VMs only.

use crate::event::{Event, VmKey, VmTraceError};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;

/// One VM of an arrival-sorted trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmTraceRecord {
    /// The VM.
    pub vm: VmKey,
    /// Arrival time (seconds).
    pub arrival: u64,
    /// Departure time, `None` when the VM outlives the trace (censored).
    pub departure: Option<u64>,
    /// Memory in bytes.
    pub mem_bytes: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Running when the trace starts.
    pub initial: bool,
}

/// Merges arrivals (in input order) with pending departures (from a heap). At equal times a
/// departure is emitted before an arrival, freeing memory first; a VM's own departure always
/// follows its arrival.
pub struct DepartureMerger<I> {
    inner: I,
    heap: BinaryHeap<Reverse<(u64, u64, VmKey)>>,
    pending: Option<VmTraceRecord>,
    seq: u64,
    last_arrival: Option<u64>,
    done: bool,
    path: PathBuf,
}

impl<I: Iterator<Item = Result<(u64, VmTraceRecord), VmTraceError>>> DepartureMerger<I> {
    /// Wraps records tagged with their line number; `path` names the trace in order errors.
    pub fn new(inner: I, path: PathBuf) -> Self {
        DepartureMerger {
            inner,
            heap: BinaryHeap::new(),
            pending: None,
            seq: 0,
            last_arrival: None,
            done: false,
            path,
        }
    }

    /// Number of VMs waiting for their departure.
    pub fn pending_departures(&self) -> usize {
        self.heap.len()
    }
}

impl<I: Iterator<Item = Result<(u64, VmTraceRecord), VmTraceError>>> Iterator
    for DepartureMerger<I>
{
    type Item = Result<Event, VmTraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pending.is_none() && !self.done {
            match self.inner.next() {
                None => self.done = true,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok((line, r))) => {
                    if let Some(last) = self.last_arrival
                        && r.arrival < last
                    {
                        return Some(Err(VmTraceError::row(
                            &self.path,
                            line,
                            format!(
                                "arrival time {} is before the previous arrival {last}: the trace must be sorted by arrival",
                                r.arrival
                            ),
                        )));
                    }
                    if let Some(d) = r.departure
                        && d < r.arrival
                    {
                        return Some(Err(VmTraceError::row(
                            &self.path,
                            line,
                            format!("departure time {d} is before its arrival {}", r.arrival),
                        )));
                    }
                    self.last_arrival = Some(r.arrival);
                    self.pending = Some(r);
                }
            }
        }
        match self.pending {
            Some(r) => {
                if let Some(Reverse((t, _, vm))) = self.heap.peek().copied()
                    && t <= r.arrival
                {
                    self.heap.pop();
                    return Some(Ok(Event::Departure { vm, time: t }));
                }
                self.pending = None;
                if let Some(d) = r.departure {
                    self.heap.push(Reverse((d, self.seq, r.vm)));
                    self.seq += 1;
                }
                Some(Ok(Event::Arrival {
                    vm: r.vm,
                    time: r.arrival,
                    mem_bytes: r.mem_bytes,
                    vcpus: r.vcpus,
                    initial: r.initial,
                }))
            }
            None => self
                .heap
                .pop()
                .map(|Reverse((t, _, vm))| Ok(Event::Departure { vm, time: t })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(vm: u64, a: u64, d: Option<u64>) -> Result<(u64, VmTraceRecord), VmTraceError> {
        Ok((
            vm + 1,
            VmTraceRecord {
                vm,
                arrival: a,
                departure: d,
                mem_bytes: 1,
                vcpus: 1,
                initial: false,
            },
        ))
    }

    #[test]
    fn departures_interleave_in_time_order() {
        let v = vec![
            rec(0, 0, Some(10)),
            rec(1, 5, Some(6)),
            rec(2, 6, None),
            rec(3, 20, Some(20)),
        ];
        let ev: Vec<Event> = DepartureMerger::new(v.into_iter(), "t".into())
            .map(Result::unwrap)
            .collect();
        let kinds: Vec<(char, u64, u64)> = ev
            .iter()
            .map(|e| match e {
                Event::Arrival { vm, time, .. } => ('A', *vm, *time),
                Event::Departure { vm, time } | Event::ImplicitEnd { vm, time } => {
                    ('D', *vm, *time)
                }
                Event::Resize { vm, time, .. } => ('R', *vm, *time),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ('A', 0, 0),
                ('A', 1, 5),
                ('D', 1, 6),
                ('A', 2, 6),
                ('D', 0, 10),
                ('A', 3, 20),
                ('D', 3, 20)
            ]
        );
    }

    #[test]
    fn unsorted_and_backwards_rows_are_row_errors() {
        let v = vec![
            rec(0, 10, Some(12)),
            rec(1, 5, Some(6)),
            rec(2, 11, Some(3)),
        ];
        let out: Vec<_> = DepartureMerger::new(v.into_iter(), "t".into()).collect();
        assert!(
            out[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("sorted by arrival")
        );
        assert!(
            out[2]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("before its arrival")
        );
        assert!(out.iter().all(|r| r.as_ref().map_or(true, |e| e.vm() == 0)));
    }
}
