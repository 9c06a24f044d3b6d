//! The VM-trace families the report reads from its data folder: where to get them, their
//! licences and the layout expected ([`FAMILIES`]), and a check of a folder ([`check`]) that opens
//! every family present with its reader and reads the first events.

use compromis_cluster::TraceFormat;
use compromis_cluster::trace::{TraceOptions, open_trace};
use std::path::{Path, PathBuf};

/// A family of VM traces.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// Folder (or file) under the data folder.
    pub rel: &'static str,
    /// The `--trace-format` that reads it.
    pub format: TraceFormat,
    /// What it is.
    pub what: &'static str,
    /// Where to get it.
    pub url: &'static str,
    /// Licence and attribution.
    pub licence: &'static str,
    /// Files expected under `rel`.
    pub layout: &'static str,
}

/// Every family `compromis reproduce` reads, in the order of its provisioning section. The
/// `azure` format also reads the raw Azure `vmtable.csv(.gz)` given with `--trace`.
pub const FAMILIES: [Family; 4] = [
    Family {
        rel: "azure-v1-rnn",
        format: TraceFormat::AzureRnn,
        what: "Azure Public Dataset V1 (2017 vmtable) re-encoded as flavor and duration streams (Bergsma et al., SOSP 2021)",
        url: "https://github.com/huaweicloud/trace_generation_rnn (from https://github.com/Azure/AzurePublicDataset)",
        licence: "CC-BY 4.0; cite Cortez et al., \"Resource Central\", SOSP 2017, and Bergsma et al., SOSP 2021",
        layout: "azure-v1-rnn/{flav_map.txt, v1.dev.txt, v1.dev.c2100000.txt, v1.interval_map.txt}",
    },
    Family {
        rel: "google-2011",
        format: TraceFormat::Google2011,
        what: "Google cluster-data 2011 task_events shards (one 12.5k-machine cell)",
        url: "https://github.com/google/cluster-data (ClusterData2011_2)",
        licence: "CC-BY 4.0; cite Reiss, Wilkes and Hellerstein, Google cluster-usage traces, 2011",
        layout: "google-2011/task_events-*.csv.gz (no header)",
    },
    Family {
        rel: "alibaba-2018/alibaba2018_container_meta_sample.csv",
        format: TraceFormat::Alibaba2018,
        what: "Alibaba cluster-trace-v2018 container_meta (and machine_meta)",
        url: "https://github.com/alibaba/clusterdata (cluster-trace-v2018)",
        licence: "for research use; cite the Alibaba cluster trace v2018",
        layout: "alibaba-2018/alibaba2018_container_meta_sample.csv (container_meta rows, no header)",
    },
    Family {
        rel: "bitbrains-rnd",
        format: TraceFormat::Bitbrains,
        what: "Bitbrains GWA-T-12 \"Rnd\" per-VM files (July 2013)",
        url: "http://gwa.ewi.tudelft.nl/datasets/gwa-t-12-bitbrains",
        licence: "Grid Workloads Archive: free for research; cite Shen et al., CCGrid 2015",
        layout: "bitbrains-rnd/*.csv or *.csv.gz (one file per VM, header line, ';'-separated)",
    },
];

/// How many events [`check`] reads from each family.
pub const CHECK_EVENTS: usize = 100;

/// The state of one family in a folder.
#[derive(Clone, Debug, PartialEq)]
pub enum FamilyStatus {
    /// Not in the folder.
    Missing,
    /// Present, and its first events read without error.
    Ok {
        /// Events read.
        events: usize,
    },
    /// Present but unreadable: the first problem, naming the file and line.
    Bad(String),
}

/// The result of checking a data folder.
#[derive(Clone, Debug)]
pub struct DataCheck {
    /// The folder.
    pub dir: PathBuf,
    /// Every family with its state, in [`FAMILIES`] order.
    pub families: Vec<(Family, PathBuf, FamilyStatus)>,
}

impl DataCheck {
    /// Whether every family present reads and at least one is present.
    pub fn ok(&self) -> bool {
        self.families
            .iter()
            .all(|(_, _, s)| !matches!(s, FamilyStatus::Bad(_)))
            && self
                .families
                .iter()
                .any(|(_, _, s)| matches!(s, FamilyStatus::Ok { .. }))
    }
}

/// Checks a data folder: which families are present, and a quick read of each (its reader opens
/// the files and parses the first [`CHECK_EVENTS`] events; the first malformed row, or a read
/// that yields no event, is a problem).
pub fn check(dir: &Path) -> DataCheck {
    let families = FAMILIES
        .iter()
        .map(|f| {
            let path = dir.join(f.rel);
            let status = if path.exists() {
                read_first(&path, f.format)
            } else {
                FamilyStatus::Missing
            };
            (*f, path, status)
        })
        .collect();
    DataCheck {
        dir: dir.to_path_buf(),
        families,
    }
}

fn read_first(path: &Path, format: TraceFormat) -> FamilyStatus {
    let stream = match open_trace(path, format, &TraceOptions::default()) {
        Ok(s) => s,
        Err(e) => return FamilyStatus::Bad(e.to_string()),
    };
    let mut events = 0;
    for e in stream.take(CHECK_EVENTS) {
        match e {
            Ok(_) => events += 1,
            Err(e) => return FamilyStatus::Bad(e.to_string()),
        }
    }
    if events == 0 {
        FamilyStatus::Bad(format!(
            "{}: no VM event read (empty, or not a {format} trace)",
            path.display()
        ))
    } else {
        FamilyStatus::Ok { events }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_with_one_good_and_one_bad_family() {
        let dir = tempfile::tempdir().unwrap();
        let c = check(dir.path());
        assert!(!c.ok());
        assert!(c.families.iter().all(|f| f.2 == FamilyStatus::Missing));
        // Alibaba: container_id, machine_id, time_stamp, app_du, status, cpu_request, cpu_limit, mem_size
        std::fs::create_dir(dir.path().join("alibaba-2018")).unwrap();
        std::fs::write(
            dir.path().join(FAMILIES[2].rel),
            "c_1,m_1,0,app_1,started,400,400,1.56\nc_2,m_2,10,app_1,started,400,400,3.13\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("bitbrains-rnd")).unwrap();
        std::fs::write(
            dir.path().join("bitbrains-rnd/1.csv"),
            "not;a;bitbrains;file\n",
        )
        .unwrap();
        let c = check(dir.path());
        assert!(
            matches!(c.families[2].2, FamilyStatus::Ok { events } if events > 0),
            "{:?}",
            c.families[2]
        );
        assert!(
            matches!(&c.families[3].2, FamilyStatus::Bad(m) if m.contains("1.csv")),
            "{:?}",
            c.families[3]
        );
        assert!(!c.ok());
        std::fs::remove_dir_all(dir.path().join("bitbrains-rnd")).unwrap();
        assert!(check(dir.path()).ok());
    }
}
