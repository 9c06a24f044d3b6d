//! Fleet sizing for placement under load (`compromis place --target-utilization U`): the trace's
//! peak memory demand, and the number of identical hosts that puts that peak at a utilisation `U`.
//!
//! The demand counts every VM of the trace as live from its arrival to its departure (resizes
//! applied), each size rounded up to the allocation granule as the engine does, whatever the
//! placement later decides; so the replay's own peak utilisation is at most `U` (refused VMs
//! only lower it) and at least `U - capacity of one host / capacity of the fleet` when nothing is
//! refused.

use crate::event::{Event, VmKey, VmTraceError};
use crate::fleet::{Fleet, HostSpec, round_vm};
use std::collections::HashMap;
use thiserror::Error;

/// A target utilisation that cannot size a fleet.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SizingError {
    /// Outside `(0, 1]`.
    #[error("target utilisation {0} is not in (0, 1]")]
    Range(f64),
    /// More hosts than a fleet may have.
    #[error(
        "a peak demand of {peak} bytes at utilisation {target} needs {hosts} hosts of {capacity} bytes (at most 100 million)"
    )]
    TooManyHosts {
        /// Peak demand.
        peak: u64,
        /// The target.
        target: f64,
        /// Hosts it would take.
        hosts: f64,
        /// VM capacity of one host.
        capacity: u64,
    },
}

/// Checks a target utilisation: a number in `(0, 1]`.
pub fn check_target(target: f64) -> Result<f64, SizingError> {
    if target.is_finite() && target > 0.0 && target <= 1.0 {
        Ok(target)
    } else {
        Err(SizingError::Range(target))
    }
}

/// The peak of the sum of live VM memory over the trace (bytes, each VM rounded to the granule).
/// Bad rows are skipped when `skip_bad_rows` (the replay counts them), else returned.
pub fn peak_demand<I>(events: I, skip_bad_rows: bool) -> Result<u64, VmTraceError>
where
    I: IntoIterator<Item = Result<Event, VmTraceError>>,
{
    let mut live: HashMap<VmKey, u64> = HashMap::new();
    let (mut cur, mut peak) = (0u64, 0u64);
    for ev in events {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) if skip_bad_rows && e.is_row_error() => continue,
            Err(e) => return Err(e),
        };
        match ev {
            Event::Arrival { vm, mem_bytes, .. } => {
                let m = round_vm(mem_bytes);
                if live.insert(vm, m).is_none() {
                    cur += m;
                } else {
                    // A repeated arrival (a bad event the replay reports): keep the first size.
                    live.insert(vm, m);
                }
            }
            Event::Departure { vm, .. } | Event::ImplicitEnd { vm, .. } => {
                cur -= live.remove(&vm).unwrap_or(0);
            }
            Event::Resize { vm, mem_bytes, .. } => {
                if let Some(m) = live.get_mut(&vm) {
                    let n = round_vm(mem_bytes);
                    cur = cur - *m + n;
                    *m = n;
                }
            }
        }
        peak = peak.max(cur);
    }
    Ok(peak)
}

/// The fleet of identical `spec` hosts whose total VM capacity puts `peak` at utilisation
/// `target`: `ceil(peak / (target x capacity))` hosts, at least one.
pub fn fleet_for_peak(spec: HostSpec, peak: u64, target: f64) -> Result<Fleet, SizingError> {
    let target = check_target(target)?;
    let cap = spec.vm_capacity();
    #[allow(clippy::cast_precision_loss)] // reason: byte counts below 2^53 are exact
    let hosts = (peak as f64 / (target * cap as f64)).ceil().max(1.0);
    if hosts > 100_000_000.0 {
        return Err(SizingError::TooManyHosts {
            peak,
            target,
            hosts,
            capacity: cap,
        });
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // reason: 1 <= hosts <= 1e8
    Ok(Fleet::uniform(hosts as u32, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    fn arr(vm: u64, time: u64, gib: u64) -> Result<Event, VmTraceError> {
        Ok(Event::Arrival {
            vm,
            time,
            mem_bytes: gib * G,
            vcpus: 1,
            initial: false,
        })
    }

    #[test]
    fn peak_follows_arrivals_departures_and_resizes() {
        let ev = vec![
            arr(1, 0, 4),
            arr(2, 1, 8),
            Ok(Event::Departure { vm: 1, time: 2 }),
            Ok(Event::Resize {
                vm: 2,
                time: 3,
                mem_bytes: 20 * G,
            }),
            arr(3, 4, 1),
            Ok(Event::Departure { vm: 2, time: 5 }),
        ];
        // 4, 12, 8, 20, 21, 1: the peak is 21 GiB.
        assert_eq!(peak_demand(ev, false).unwrap(), 21 * G);
        // Sizes are rounded to the granule as the engine rounds them.
        assert_eq!(
            peak_demand(
                vec![Ok(Event::Arrival {
                    vm: 1,
                    time: 0,
                    mem_bytes: 1,
                    vcpus: 1,
                    initial: false
                })],
                false
            )
            .unwrap(),
            crate::fleet::VM_GRANULE
        );
    }

    #[test]
    fn fleet_is_sized_to_the_target() {
        let spec = HostSpec {
            mem_bytes: 100 * G,
            cores: 8,
            reserved_bytes: 0,
        };
        // 1,000 GiB at 50 %: 2,000 GiB of hosts, 20 hosts; at 0.3: 3,333.3 GiB, 34 hosts.
        assert_eq!(fleet_for_peak(spec, 1000 * G, 0.5).unwrap().len(), 20);
        assert_eq!(fleet_for_peak(spec, 1000 * G, 0.3).unwrap().len(), 34);
        assert_eq!(fleet_for_peak(spec, 0, 0.5).unwrap().len(), 1);
        for bad in [0.0, -0.1, 1.01, f64::NAN] {
            assert!(fleet_for_peak(spec, G, bad).is_err(), "{bad}");
        }
        assert!(matches!(
            fleet_for_peak(spec, u64::MAX, 1e-9),
            Err(SizingError::TooManyHosts { .. })
        ));
    }
}
