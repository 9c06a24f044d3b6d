//! Running a sweep: points in parallel on a thread pool, each finished point written at once
//! (atomically) to its own folder, finished points skipped on a rerun, and the tidy table built
//! from the point folders.
//!
//! Layout of an output folder:
//! ```text
//! DIR/sweep.json                  the spec's checksum and the list of points
//! DIR/points/<id>/rows.csv        the point's result rows (the command's CSV)
//! DIR/points/<id>/run.json        provenance; written last, so it marks the point finished
//! DIR/table.csv, DIR/table.parquet   the tidy table, once every point is finished
//! ```

use crate::SweepError;
use crate::provenance::{InputFile, Provenance, checksums};
use crate::spec::{Point, Spec};
use crate::table::Tidy;
use compromis_report::write_atomic;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What running a point returns.
#[derive(Clone, Debug, Default)]
pub struct PointOutput {
    /// The result rows (the command's CSV printer as a table).
    pub rows: compromis_report::Table,
    /// The resolved machine model (`sim`), as JSON.
    pub machine: Option<serde_json::Value>,
    /// Everything the command resolved (the request with defaults filled), as JSON.
    pub resolved: Option<serde_json::Value>,
}

/// Runs points of one command. The `compromis` binary implements it by parsing the point's
/// arguments with the command's own parser and calling the library, in-process.
pub trait Executor: Sync {
    /// Checks a point's arguments without running it (called for every point before any runs).
    fn check(&self, point: &Point) -> Result<(), String>;
    /// Runs a point.
    fn run(&self, point: &Point) -> Result<PointOutput, String>;
}

/// A slice of the points: those whose index is `index` modulo `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based shard number.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Whether the point with this index belongs to the shard.
    pub fn has(self, point: usize) -> bool {
        point % self.count == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    /// Parses `I/N` with `0 <= I < N`.
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("invalid shard '{s}': expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// `DIR/sweep.json`: identifies the sweep an output folder belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepFile {
    /// The command.
    pub command: String,
    /// The spec file as given.
    pub spec: String,
    /// Columns of the swept keys, in order.
    pub columns: Vec<String>,
    /// Point ids in order (content-derived: two folders with the same ids hold the same sweep).
    pub points: Vec<String>,
    /// Swept values per point, in column order.
    pub values: Vec<Vec<String>>,
    /// Seeds per point.
    pub seeds: Vec<u64>,
}

impl SweepFile {
    /// The description of `spec`.
    pub fn of(spec: &Spec) -> SweepFile {
        SweepFile {
            command: spec.command.name().to_owned(),
            spec: spec.path.display().to_string(),
            columns: spec.axes.iter().map(|(_, c)| c.clone()).collect(),
            points: spec.points.iter().map(|p| p.id.clone()).collect(),
            values: spec
                .points
                .iter()
                .map(|p| p.params.iter().map(|x| x.value.clone()).collect())
                .collect(),
            seeds: spec.points.iter().map(|p| p.seed).collect(),
        }
    }

    /// Reads `DIR/sweep.json`.
    pub fn load(dir: &Path) -> Result<SweepFile, SweepError> {
        let path = dir.join("sweep.json");
        let text = std::fs::read_to_string(&path).map_err(|source| SweepError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| SweepError::Spec {
            path: path.display().to_string(),
            line: Some(e.line()),
            message: e.to_string(),
        })
    }
}

/// `run.json` of a point.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord<'a> {
    /// The point (index, id, swept values, seed, arguments).
    pub point: &'a Point,
    /// The command.
    pub command: &'a str,
    /// Tool version, git commit and the command line equivalent to the point.
    pub provenance: Provenance,
    /// Machine-model keys the spec set at this point.
    pub machine_keys: &'a toml::Table,
    /// The resolved machine model.
    pub machine: Option<serde_json::Value>,
    /// The resolved request.
    pub resolved: Option<serde_json::Value>,
    /// SHA-256 of the spec file.
    pub spec_sha256: &'a str,
    /// Checksums of the input files.
    pub inputs: Vec<InputFile>,
    /// Wall time of the point, in seconds (here only: the tidy table stays deterministic).
    pub wall_seconds: f64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
    move |source| SweepError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether a point's results are in `dir`.
pub fn is_finished(dir: &Path, point_id: &str) -> bool {
    let p = dir.join("points").join(point_id);
    p.join("run.json").is_file() && p.join("rows.csv").is_file()
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output folder.
    pub out: PathBuf,
    /// Worker threads.
    pub jobs: usize,
    /// Run only this shard.
    pub shard: Option<Shard>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Points of the sweep.
    pub total: usize,
    /// Points of this run (the shard's, or all).
    pub selected: usize,
    /// Selected points already finished before this run.
    pub skipped: usize,
    /// Points run now.
    pub ran: usize,
    /// Points that failed (id, label, message).
    pub failed: Vec<(String, String, String)>,
    /// The table written, when every point of the sweep is finished in the folder.
    pub table: Option<PathBuf>,
}

/// Prepares the folder: writes `sweep.json`, or checks that an existing one is the same sweep.
pub fn prepare(spec: &Spec, out: &Path) -> Result<(), SweepError> {
    std::fs::create_dir_all(out.join("points")).map_err(io_err(out))?;
    let mine = SweepFile::of(spec);
    let path = out.join("sweep.json");
    if path.is_file() {
        let old = SweepFile::load(out)?;
        if old.points != mine.points {
            return Err(SweepError::Mismatch(format!(
                "{} holds another sweep (its points differ from {}'s): use another --out folder",
                out.display(),
                spec.path.display()
            )));
        }
        if old == mine {
            return Ok(());
        }
    }
    let text = serde_json::to_string_pretty(&mine)? + "\n";
    write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// Runs the sweep (or one shard): checks every point, skips finished ones, runs the others in
/// parallel, and writes the table when every point of the sweep is finished in `opts.out`.
pub fn run(spec: &Spec, exec: &dyn Executor, opts: &RunOptions) -> Result<RunSummary, SweepError> {
    for p in &spec.points {
        exec.check(p).map_err(|message| SweepError::Point {
            id: format!("{} ({}) of {}", p.id, p.label(), spec.path.display()),
            message,
        })?;
    }
    prepare(spec, &opts.out)?;
    let selected: Vec<&Point> = spec
        .points
        .iter()
        .filter(|p| opts.shard.is_none_or(|s| s.has(p.index)))
        .collect();
    let pending: Vec<&Point> = selected
        .iter()
        .copied()
        .filter(|p| !is_finished(&opts.out, &p.id))
        .collect();
    let mut summary = RunSummary {
        total: spec.points.len(),
        selected: selected.len(),
        skipped: selected.len() - pending.len(),
        ..RunSummary::default()
    };
    let pb = ProgressBar::new(pending.len() as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} points (eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    pb.tick();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .build()
        .map_err(|e| SweepError::Mismatch(format!("cannot start the thread pool: {e}")))?;
    let results: Vec<Result<(), (String, String, String)>> = pool.install(|| {
        pending
            .par_iter()
            .map(|p| {
                let r = run_point(spec, exec, p, &opts.out)
                    .map_err(|e| (p.id.clone(), p.label(), e.to_string()));
                pb.inc(1);
                r
            })
            .collect()
    });
    pb.finish_and_clear();
    for r in results {
        match r {
            Ok(()) => summary.ran += 1,
            Err(f) => summary.failed.push(f),
        }
    }
    if spec.points.iter().all(|p| is_finished(&opts.out, &p.id)) {
        summary.table = Some(write_table(std::slice::from_ref(&opts.out), &opts.out)?);
    }
    Ok(summary)
}

fn run_point(spec: &Spec, exec: &dyn Executor, p: &Point, out: &Path) -> Result<(), SweepError> {
    let start = Instant::now();
    let output = exec.run(p).map_err(|message| SweepError::Point {
        id: p.id.clone(),
        message,
    })?;
    let wall_seconds = start.elapsed().as_secs_f64();
    let mut inputs = Vec::new();
    for path in &p.inputs {
        inputs.extend(checksums(path).map_err(io_err(path))?);
    }
    let mut args = vec![spec.command.name().to_owned()];
    args.extend(p.args.iter().cloned());
    let record = RunRecord {
        point: p,
        command: spec.command.name(),
        provenance: Provenance::new(args),
        machine_keys: &p.machine,
        machine: output.machine,
        resolved: output.resolved,
        spec_sha256: &spec.sha256,
        inputs,
        wall_seconds,
    };
    let dir = out.join("points").join(&p.id);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    write_atomic(&dir.join("rows.csv"), output.rows.to_csv()?.as_bytes())?;
    let json = serde_json::to_string_pretty(&record)? + "\n";
    write_atomic(&dir.join("run.json"), json.as_bytes())?;
    Ok(())
}

/// Builds the tidy table from the point folders of `dirs` (all of the same sweep; a point may be
/// in any of them) and writes `out/table.csv` and `out/table.parquet`. Every point must be
/// finished in one of the folders. Returns the CSV's path.
pub fn write_table(dirs: &[PathBuf], out: &Path) -> Result<PathBuf, SweepError> {
    let first = dirs
        .first()
        .ok_or_else(|| SweepError::Mismatch("no folder to merge".into()))?;
    let sweep = SweepFile::load(first)?;
    for d in &dirs[1..] {
        let other = SweepFile::load(d)?;
        if other.points != sweep.points {
            return Err(SweepError::Mismatch(format!(
                "{} and {} hold different sweeps",
                first.display(),
                d.display()
            )));
        }
    }
    let mut missing = Vec::new();
    let mut tidy = Tidy::default();
    for (i, id) in sweep.points.iter().enumerate() {
        let Some(dir) = dirs.iter().find(|d| is_finished(d, id)) else {
            missing.push(id.clone());
            continue;
        };
        let path = dir.join("points").join(id).join("rows.csv");
        let text = std::fs::read(&path).map_err(io_err(&path))?;
        let mut r = csv::Reader::from_reader(&text[..]);
        let header: Vec<String> = r.headers()?.iter().map(str::to_owned).collect();
        // Swept columns a result column also names are left to the result (its resolved value).
        let params: Vec<usize> = (0..sweep.columns.len())
            .filter(|&c| !header.contains(&sweep.columns[c]))
            .collect();
        let mut full: Vec<String> = vec!["point".into()];
        full.extend(params.iter().map(|&c| sweep.columns[c].clone()));
        full.push("seed".into());
        full.extend(header.iter().cloned());
        if tidy.header.is_empty() {
            tidy.header = full;
        } else if tidy.header != full {
            return Err(SweepError::Mismatch(format!(
                "{}: columns differ from the first point's",
                path.display()
            )));
        }
        for rec in r.records() {
            let rec = rec?;
            let mut row = vec![i.to_string()];
            row.extend(params.iter().map(|&c| sweep.values[i][c].clone()));
            row.push(sweep.seeds[i].to_string());
            row.extend(rec.iter().map(str::to_owned));
            tidy.rows.push(row);
        }
    }
    if !missing.is_empty() {
        return Err(SweepError::Mismatch(format!(
            "{} of {} points are not finished in {} (first: {}); run the missing shards, or rerun the sweep",
            missing.len(),
            sweep.points.len(),
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            missing[0]
        )));
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let csv_path = out.join("table.csv");
    write_atomic(&csv_path, &tidy.to_csv()?)?;
    write_atomic(&out.join("table.parquet"), &tidy.to_parquet()?)?;
    Ok(csv_path)
}
