//! Azure Public Dataset `vmtable` CSV (Cortez et al., "Resource Central", SOSP 2017).
//!
//! Columns (no header in the public files; a header line is skipped when present): `vmid,
//! subscriptionid, deploymentid, vmcreated, vmdeleted, maxcpu, avgcpu, p95maxcpu, vmcategory,
//! vmcorecount, vmmemory`. V1 gives exact core counts and GB; V2 gives bucket labels, mapped by
//! [`bucket_value`]. A VM created at time 0 was running when the trace started (`initial`).
//!
//! The public vmtable is not sorted by creation time, so this reader first reads every row into a
//! compact record (about 40 bytes per VM: 80 MB for the 2 M VMs of V1), sorts them, then streams
//! them through [`DepartureMerger`]. Row errors are reported (with their line) before any event.

use super::merge::{DepartureMerger, VmTraceRecord};
use super::{Lines, f64_to_u64, field, gb_to_bytes, parse_u64};
use crate::event::{Event, VmTraceError};
use std::path::Path;

/// Maps an Azure V2 bucket label (or a V1 exact number) to a value: `N` is N; `>N` is 2N (the
/// next size class of the power-of-two series the buckets follow); `<N` is N/2; `A-B` is B.
pub fn bucket_value(label: &str) -> Option<f64> {
    let t = label.trim();
    let num = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
    };
    if let Some(r) = t.strip_prefix('>') {
        num(r.trim_start_matches('=')).map(|x| x * 2.0)
    } else if let Some(r) = t.strip_prefix('<') {
        num(r.trim_start_matches('=')).map(|x| x / 2.0)
    } else if let Some((_, b)) = t.split_once('-').filter(|(a, _)| !a.is_empty()) {
        num(b)
    } else {
        num(t)
    }
}

/// Reader of a vmtable file (plain or gzip).
pub struct AzureReader {
    errors: std::vec::IntoIter<VmTraceError>,
    merger: DepartureMerger<std::vec::IntoIter<Result<(u64, VmTraceRecord), VmTraceError>>>,
}

impl AzureReader {
    /// Reads and sorts the table.
    pub fn open(path: &Path) -> Result<AzureReader, VmTraceError> {
        let mut lines = Lines::open(path)?;
        let mut recs: Vec<(u64, VmTraceRecord)> = Vec::new();
        let mut errors = Vec::new();
        while let Some(l) = lines.next_line() {
            let l = l?.to_owned();
            let line = lines.line;
            if l.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = l.split(',').collect();
            if line == 1
                && fields
                    .get(3)
                    .is_some_and(|f| f.trim().eq_ignore_ascii_case("vmcreated"))
            {
                continue;
            }
            let vm = recs.len() as u64 + errors.len() as u64;
            match parse_row(&fields, vm) {
                Ok(r) => recs.push((line, r)),
                Err(reason) => errors.push(VmTraceError::row(path, line, reason)),
            }
        }
        recs.sort_by_key(|(line, r)| (r.arrival, *line));
        let it: Vec<Result<(u64, VmTraceRecord), VmTraceError>> =
            recs.into_iter().map(Ok).collect();
        Ok(AzureReader {
            errors: errors.into_iter(),
            merger: DepartureMerger::new(it.into_iter(), path.to_path_buf()),
        })
    }
}

/// Columns of the Azure V1 `vmtable` (vmid .. vmmemory).
const AZURE_COLUMNS: usize = 11;

fn parse_row(fields: &[&str], vm: u64) -> Result<VmTraceRecord, String> {
    if fields.len() > AZURE_COLUMNS {
        return Err(format!(
            "expected {AZURE_COLUMNS} columns, the row has {} (extra value '{}')",
            fields.len(),
            fields[AZURE_COLUMNS].trim()
        ));
    }
    let created = parse_u64(field(fields, 3, "vmcreated")?, "vmcreated")?;
    let deleted = parse_u64(field(fields, 4, "vmdeleted")?, "vmdeleted")?;
    let cores_s = field(fields, 9, "vmcorecount")?;
    let mem_s = field(fields, 10, "vmmemory")?;
    let cores =
        bucket_value(cores_s).ok_or_else(|| format!("bad vmcorecount '{}'", cores_s.trim()))?;
    let mem = bucket_value(mem_s).ok_or_else(|| format!("bad vmmemory '{}'", mem_s.trim()))?;
    if deleted < created {
        return Err(format!(
            "departure (vmdeleted {deleted}) before arrival (vmcreated {created})"
        ));
    }
    let vcpus = u32::try_from(f64_to_u64(cores.ceil()))
        .map_err(|_| format!("bad vmcorecount '{}'", cores_s.trim()))?;
    Ok(VmTraceRecord {
        vm,
        arrival: created,
        departure: Some(deleted),
        mem_bytes: gb_to_bytes(mem, "vmmemory", mem_s)?,
        vcpus,
        initial: created == 0,
    })
}

impl Iterator for AzureReader {
    type Item = Result<Event, VmTraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.errors.next() {
            return Some(Err(e));
        }
        self.merger.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn buckets() {
        assert_eq!(bucket_value("64"), Some(64.0));
        assert_eq!(bucket_value(">64"), Some(128.0));
        assert_eq!(bucket_value("<2"), Some(1.0));
        assert_eq!(bucket_value("2-4"), Some(4.0));
        assert_eq!(bucket_value("1.75"), Some(1.75));
        assert_eq!(bucket_value("x"), None);
        assert_eq!(bucket_value("-3"), None);
    }

    #[test]
    fn reads_sorted_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let rows = "vm1,s,d,600,900,1,1,1,Interactive,2,4\nvm0,s,d,0,1200,1,1,1,Unknown,1,1.75\nvm2,s,d,600,600,1,1,1,Interactive,>24,>64\n";
        let p = dir.path().join("t.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&p).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(rows.as_bytes()).unwrap();
        gz.finish().unwrap();
        let ev: Vec<Event> = AzureReader::open(&p).unwrap().map(Result::unwrap).collect();
        assert_eq!(ev.len(), 6);
        assert_eq!(
            ev[0],
            Event::Arrival {
                vm: 1,
                time: 0,
                mem_bytes: 1792 << 20,
                vcpus: 1,
                initial: true
            }
        );
        assert_eq!(
            ev[1],
            Event::Arrival {
                vm: 0,
                time: 600,
                mem_bytes: 4 << 30,
                vcpus: 2,
                initial: false
            }
        );
        assert_eq!(
            ev[2],
            Event::Arrival {
                vm: 2,
                time: 600,
                mem_bytes: 128 << 30,
                vcpus: 48,
                initial: false
            }
        );
        assert_eq!(ev[3], Event::Departure { vm: 2, time: 600 });
        assert_eq!(ev[4], Event::Departure { vm: 0, time: 900 });
        assert_eq!(ev[5], Event::Departure { vm: 1, time: 1200 });
    }

    #[test]
    fn bad_rows_name_line_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "a,s,d,-5,10,1,1,1,x,1,1\nb,s,d,50,10,1,1,1,x,1,1\nc,s,d,0,10,1,1,1,x,1\nd,s,d,0,10,1,1,1,x,1,2\n").unwrap();
        let out: Vec<_> = AzureReader::open(&p).unwrap().collect();
        let msgs: Vec<String> = out
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("line 1") && msgs[0].contains("negative vmcreated '-5'"));
        assert!(msgs[1].contains("line 2") && msgs[1].contains("before arrival"));
        assert!(msgs[2].contains("line 3") && msgs[2].contains("missing column vmmemory"));
        assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 2);
    }

    #[test]
    fn huge_memory_and_extra_column_are_row_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(
            &p,
            "a,s,d,0,10,1,1,1,x,1,17592186044416\nb,s,d,0,10,1,1,1,x,1,2,9\nc,s,d,0,10,1,1,1,x,1,2\n",
        )
        .unwrap();
        let out: Vec<_> = AzureReader::open(&p).unwrap().collect();
        let msgs: Vec<String> = out
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].contains("t.csv")
                && msgs[0].contains("line 1")
                && msgs[0].contains("vmmemory '17592186044416' too large"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].contains("line 2") && msgs[1].contains("expected 11 columns, the row has 12"),
            "{msgs:?}"
        );
        assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 2);
    }
}
