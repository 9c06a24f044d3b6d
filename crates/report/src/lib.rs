//! The presentation layer of Compromis: every table, CSV, JSON document, figure and output file
//! of the workspace is made here, from data the other libraries return (they never print, plot or
//! write files); printers only read what they print.
//!
//! - [`Table`]: a titled grid of strings, rendered as an aligned text table or as CSV;
//! - [`Format`]: the `table|json|csv` output choice shared by the commands;
//! - [`write_atomic`]: writes an output file through a temporary file and a rename, so a failed
//!   run never leaves a half-written file;
//! - [`theme`]: one colour-blind-safe palette, one font and its sizes in points, the column and
//!   page widths of every figure;
//! - [`figure`]: the plotting API of paper figures (grouped bars in panels, lines over x, time
//!   series) and their export as SVG, PDF and PNG; [`svg`] keeps the first chart functions;
//! - [`place`]: printers and plots of `compromis_cluster` placement reports;
//! - [`hv`]: printers of `compromis_hostmem` (host map as text, table and SVG, scenario steps).

use std::io::Write;
use std::path::Path;
use thiserror::Error;

pub mod figure;
pub mod hv;
pub mod place;
pub mod svg;
pub mod theme;

/// Output errors.
#[derive(Debug, Error)]
pub enum ReportError {
    /// Writing a file failed.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// CSV encoding failed.
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    /// JSON encoding failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The output folder exists with files in it and `--force` was not given.
    #[error(
        "output folder {path} exists and is not empty; give --force to replace it (its files are \
         removed) or choose another folder"
    )]
    NotEmpty {
        /// The folder.
        path: String,
    },
    /// The output folder cannot be replaced (it is the current folder or holds it).
    #[error("output folder {path} {why}; choose another folder")]
    Refused {
        /// The folder.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// Plotting failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Output format of a command's results (with the `clap` feature, a `clap::ValueEnum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// Aligned text table.
    #[default]
    Table,
    /// JSON document.
    Json,
    /// CSV with a header line.
    Csv,
}

impl Format {
    /// Every format, in the order of the valid-values list.
    pub const ALL: [Format; 3] = [Format::Table, Format::Json, Format::Csv];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    /// Parses a name, ignoring case and surrounding blanks.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(format!(
                "unknown format '{s}': valid values are table, json, csv"
            )),
        }
    }
}

/// A grid of cells with a header row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Optional title printed above the text rendering.
    pub title: Option<String>,
    /// Column names.
    pub header: Vec<String>,
    /// Rows (each as long as the header).
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with `header`.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            title: None,
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Sets the title.
    pub fn with_title(mut self, t: impl Into<String>) -> Table {
        self.title = Some(t.into());
        self
    }

    /// Appends a row.
    pub fn push<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) {
        self.rows.push(row.into_iter().map(Into::into).collect());
    }

    /// Aligned text (numbers right-aligned).
    pub fn to_text(&self) -> String {
        use comfy_table::{CellAlignment, ContentArrangement, presets};
        let mut t = comfy_table::Table::new();
        t.load_preset(presets::ASCII_MARKDOWN)
            .set_content_arrangement(ContentArrangement::Disabled);
        t.set_header(&self.header);
        for r in &self.rows {
            t.add_row(r.iter().map(|c| {
                let numeric = c
                    .trim_end_matches(['%', 'x'])
                    .replace(',', "")
                    .parse::<f64>()
                    .is_ok();
                let cell = comfy_table::Cell::new(c);
                if numeric {
                    cell.set_alignment(CellAlignment::Right)
                } else {
                    cell
                }
            }));
        }
        match &self.title {
            Some(title) => format!("{title}\n{t}\n"),
            None => format!("{t}\n"),
        }
    }

    /// CSV with a header line.
    pub fn to_csv(&self) -> Result<String, ReportError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.header)?;
        for r in &self.rows {
            w.write_record(r)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| ReportError::Csv(e.into_error().into()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The same table with rows and columns swapped (the header becomes the first column).
    pub fn transposed(&self) -> Table {
        let mut t = Table {
            title: self.title.clone(),
            header: Vec::new(),
            rows: Vec::new(),
        };
        t.header
            .push(self.header.first().cloned().unwrap_or_default());
        t.header.extend(
            self.rows
                .iter()
                .map(|r| r.first().cloned().unwrap_or_default()),
        );
        for (i, h) in self.header.iter().enumerate().skip(1) {
            let mut row = vec![h.clone()];
            row.extend(
                self.rows
                    .iter()
                    .map(|r| r.get(i).cloned().unwrap_or_default()),
            );
            t.rows.push(row);
        }
        t
    }
}

/// Writes `contents` to `path` atomically: into a temporary file in the same folder
/// ([`tempfile::NamedTempFile`]), flushed to disk, then renamed over `path` (`persist`). A failed
/// write leaves no temporary file and the previous `path`, if any, untouched. A new file gets the
/// mode `File::create` would give it (0o666 less the umask); a replaced file keeps its permissions.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ReportError> {
    let io = |source| ReportError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".compromis-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    // Removed by a signal handler if the process is stopped before the rename.
    let _registered = compromis_types::cleanup::Registered::new(tmp.path());
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file()
            .set_permissions(meta.permissions())
            .map_err(io)?;
    }
    tmp.write_all(contents).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// An output folder written atomically: the files go into a hidden staging folder beside it
/// (created at once, so an unwritable destination fails before any work), which
/// [`StagedDir::commit`] renames into place. An existing folder with files in it is refused
/// unless `force`; with `force` it is replaced whole (none of its old files stay among the
/// new). Dropped without `commit`, or stopped by a signal, nothing is left behind.
#[derive(Debug)]
pub struct StagedDir {
    out: std::path::PathBuf,
    staging: tempfile::TempDir,
    _registered: compromis_types::cleanup::Registered,
}

impl StagedDir {
    /// Checks `out` and creates the staging folder next to it.
    pub fn prepare(out: &Path, force: bool) -> Result<StagedDir, ReportError> {
        let name = out.display().to_string();
        let io = |source| ReportError::Io {
            path: name.clone(),
            source,
        };
        match std::fs::metadata(out) {
            Ok(m) if !m.is_dir() => {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "it exists and is not a folder",
                )));
            }
            Ok(_) => {
                let non_empty = std::fs::read_dir(out).map_err(io)?.next().is_some();
                if non_empty && !force {
                    return Err(ReportError::NotEmpty { path: name });
                }
                let abs = std::fs::canonicalize(out).map_err(io)?;
                let cwd = std::env::current_dir().ok();
                if cwd.is_some_and(|c| c.starts_with(&abs)) {
                    return Err(ReportError::Refused {
                        path: name,
                        why: "is the current folder or holds it",
                    });
                }
            }
            Err(_) => {}
        }
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let staging = tempfile::Builder::new()
            .prefix(".compromis-out-")
            .tempdir_in(parent)
            .map_err(io)?;
        Ok(StagedDir {
            _registered: compromis_types::cleanup::Registered::new(staging.path()),
            out: out.to_path_buf(),
            staging,
        })
    }

    /// Where to write the files now.
    pub fn path(&self) -> &Path {
        self.staging.path()
    }

    /// The final folder.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// `p` (a path inside the staging folder) as it will be named after [`StagedDir::commit`].
    pub fn final_path(&self, p: &Path) -> std::path::PathBuf {
        p.strip_prefix(self.staging.path())
            .map_or_else(|_| p.to_path_buf(), |rest| self.out.join(rest))
    }

    /// Renames the staging folder into place, replacing the old folder (checked empty, or
    /// `force`).
    pub fn commit(self) -> Result<(), ReportError> {
        let io = |source| ReportError::Io {
            path: self.out.display().to_string(),
            source,
        };
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(self.staging.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(io)?;
        }
        let staging = self.staging.keep();
        let old = if self.out.exists() {
            let parent = staging.parent().unwrap_or(Path::new("."));
            let old = tempfile::Builder::new()
                .prefix(".compromis-old-")
                .tempdir_in(parent)
                .map_err(io)?
                .keep();
            // rename(2) replaces an empty folder: the old folder goes to the (empty) `old` name.
            std::fs::rename(&self.out, &old).map_err(io)?;
            Some(old)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&staging, &self.out) {
            if let Some(old) = &old {
                let _ = std::fs::rename(old, &self.out);
            }
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io(e));
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(&old).map_err(io)?;
        }
        Ok(())
    }
}

/// Formats a count with thousands separators.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn staged_dir_refuses_non_empty_and_replaces_whole_with_force() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        // New folder.
        let st = StagedDir::prepare(&out, false).unwrap();
        std::fs::write(st.path().join("a.txt"), b"1").unwrap();
        assert_eq!(st.final_path(&st.path().join("a.txt")), out.join("a.txt"));
        st.commit().unwrap();
        assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"1");
        // Not empty: refused, untouched, no staging left.
        let e = StagedDir::prepare(&out, false).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        // Forced: the old file does not linger.
        let st = StagedDir::prepare(&out, true).unwrap();
        std::fs::write(st.path().join("b.txt"), b"2").unwrap();
        st.commit().unwrap();
        assert!(!out.join("a.txt").exists());
        assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"2");
        // Dropped without commit: nothing left but `out`.
        let st = StagedDir::prepare(&out, true).unwrap();
        std::fs::write(st.path().join("c.txt"), b"3").unwrap();
        drop(st);
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A file in the way, and the current folder, are refused.
        std::fs::write(root.path().join("f"), b"").unwrap();
        assert!(StagedDir::prepare(&root.path().join("f"), true).is_err());
        assert!(StagedDir::prepare(Path::new("."), true).is_err());
    }

    use super::*;

    #[test]
    fn table_renders_and_transposes() {
        let mut t = Table::new(["scheme", "refs"]);
        t.push(["ept", "24.00"]);
        t.push(["compromis", "4.00"]);
        assert_eq!(
            t.to_csv().unwrap(),
            "scheme,refs\nept,24.00\ncompromis,4.00\n"
        );
        let tt = t.transposed();
        assert_eq!(tt.header, vec!["scheme", "ept", "compromis"]);
        assert_eq!(tt.rows, vec![vec!["refs", "24.00", "4.00"]]);
        assert!(t.to_text().contains("compromis"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(100), "100");
    }

    #[test]
    fn atomic_write_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("compromis-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.csv");
        write_atomic(&p, b"a,b\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"a,b\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert!(write_atomic(&dir.join("missing/x.csv"), b"").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_modes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // A new file gets the same mode as one made by `File::create`.
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let p = dir.path().join("new.svg");
        write_atomic(&p, b"<svg/>").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), mode(&plain));
        // A replaced file keeps its permissions.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"<svg></svg>").unwrap();
        assert_eq!(mode(&p), 0o640);
        assert_eq!(std::fs::read(&p).unwrap(), b"<svg></svg>");
    }

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!(" CSV ".parse::<Format>(), Ok(Format::Csv));
        assert!(
            "xml"
                .parse::<Format>()
                .unwrap_err()
                .contains("table, json, csv")
        );
    }
}
