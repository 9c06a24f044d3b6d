//! Provenance of a result: the tool's version and git commit (embedded at build time), the
//! command line, and checksums of input files. `compromis sim`, `place` and `record` attach it to
//! their JSON (a `provenance` object) and CSV (trailing columns) results; a sweep writes it, with
//! the point's parameters and the resolved machine model, to each point's `run.json`.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The tool's version (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the tool was built from, or "unknown" when built outside git.
pub const GIT_COMMIT: &str = env!("COMPROMIS_GIT_COMMIT");

/// Names of the provenance columns appended to the CSV results of `sim`, `place` and `record`.
pub const CSV_COLUMNS: [&str; 3] = ["compromis_version", "git_commit", "command_line"];

/// What produced a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// Always "compromis".
    pub tool: &'static str,
    /// [`VERSION`].
    pub version: &'static str,
    /// [`GIT_COMMIT`].
    pub git_commit: &'static str,
    /// The arguments after the program name (`sim --workload gups ...`).
    pub args: Vec<String>,
}

impl Provenance {
    /// Provenance of a run with these arguments (without the program name).
    pub fn new(args: Vec<String>) -> Provenance {
        Provenance {
            tool: "compromis",
            version: VERSION,
            git_commit: GIT_COMMIT,
            args,
        }
    }

    /// Provenance of this process (its arguments, without the program name).
    pub fn of_process() -> Provenance {
        Provenance::new(
            std::env::args_os()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        )
    }

    /// The command line, each argument quoted for a POSIX shell where it needs it.
    pub fn command_line(&self) -> String {
        let mut s = String::from("compromis");
        for a in &self.args {
            s.push(' ');
            s.push_str(&shell_quote(a));
        }
        s
    }

    /// The values of [`CSV_COLUMNS`].
    pub fn csv_values(&self) -> [String; 3] {
        [
            self.version.to_owned(),
            self.git_commit.to_owned(),
            self.command_line(),
        ]
    }

    /// Adds a `provenance` object to a JSON object (other values are returned as they are).
    pub fn attach_json(&self, mut v: serde_json::Value) -> serde_json::Value {
        if let Some(m) = v.as_object_mut() {
            m.insert(
                "provenance".into(),
                serde_json::to_value(self).unwrap_or_default(),
            );
        }
        v
    }

    /// Appends [`CSV_COLUMNS`] to every line of a CSV document with a header line (records are
    /// read and rewritten with the `csv` crate; a blank line ends a table, and a following table
    /// gets the columns too).
    pub fn attach_csv(&self, text: &str) -> Result<String, csv::Error> {
        let values = self.csv_values();
        let mut out = String::new();
        for (i, block) in text.split("\n\n").enumerate() {
            if block.trim().is_empty() {
                continue;
            }
            if i > 0 {
                out.push('\n');
            }
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(block.as_bytes());
            let mut w = csv::Writer::from_writer(Vec::new());
            for (n, rec) in r.records().enumerate() {
                let mut rec = rec?;
                if n == 0 {
                    for c in CSV_COLUMNS {
                        rec.push_field(c);
                    }
                } else {
                    for v in &values {
                        rec.push_field(v);
                    }
                }
                w.write_record(&rec)?;
            }
            let bytes = w.into_inner().map_err(|e| e.into_error())?;
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
        Ok(out)
    }
}

/// `s` quoted for a POSIX shell when it holds anything but `[A-Za-z0-9_./:=,+-]`.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=,+-@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A file's SHA-256, as lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 of bytes, as lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// An input file and its checksum (a folder: every file under it, sorted by path).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InputFile {
    /// The path as given.
    pub path: String,
    /// SHA-256 of its content.
    pub sha256: String,
}

/// Checksums of `path`: one entry for a file, one per file (sorted) under a folder.
pub fn checksums(path: &Path) -> std::io::Result<Vec<InputFile>> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    files.sort();
    files
        .into_iter()
        .map(|p| {
            Ok(InputFile {
                sha256: sha256_file(&p)?,
                path: p.display().to_string(),
            })
        })
        .collect()
}

fn collect(path: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            collect(&e?.path(), out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_gets_trailing_columns_on_every_table() {
        let p = Provenance::new(vec!["sim".into(), "--workload".into(), "a b".into()]);
        let out = p.attach_csv("x,y\n1,2\n\npid,cmd\n7,\"a,b\"\n").unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "x,y,compromis_version,git_commit,command_line");
        assert!(lines[1].starts_with("1,2,"));
        assert!(lines[1].ends_with(",compromis sim --workload 'a b'"));
        assert_eq!(lines[2], "");
        assert!(lines[3].starts_with("pid,cmd,compromis_version"));
        assert!(lines[4].starts_with("7,\"a,b\","));
    }

    #[test]
    fn json_gets_a_provenance_object() {
        let p = Provenance::new(vec!["place".into()]);
        let v = p.attach_json(serde_json::json!({"a": 1}));
        assert_eq!(v["provenance"]["args"][0], "place");
        assert_eq!(v["provenance"]["version"], VERSION);
        assert!(!GIT_COMMIT.is_empty());
    }

    #[test]
    fn quoting_and_checksums() {
        assert_eq!(shell_quote("4k"), "4k");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b"), b"abc").unwrap();
        std::fs::write(d.path().join("a"), b"").unwrap();
        let c = checksums(d.path()).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c[0].path.ends_with("a") && c[1].sha256 == sha256_bytes(b"abc"));
    }
}
