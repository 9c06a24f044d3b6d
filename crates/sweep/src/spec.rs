//! Sweep specification files and the points they describe.
//!
//! ```toml
//! command = "sim"                 # or "place"
//! seeds = [1, 2, 3]               # default [42]
//!
//! [flags]                         # fixed flags of the command (`--name value`; true = `--name`)
//! workload = "gups"
//! accesses = 200000
//! schemes = ["native", "ept", "shadow", "compromis"]
//!
//! [machine]                       # fixed machine-model keys (`sim` only), as in a --config file
//! tlb.tagged = true
//!
//! [sweep]                         # one list per flag or `machine.` key: the cross product runs
//! host-pages = ["4k", "2m"]
//! "machine.cache.dram_latency" = [150, 300]
//! ```
//!
//! Points are enumerated in the order of the `[sweep]` keys (the first varies slowest), seeds
//! innermost. Each point has an id derived from its content (a hash of the command, flags,
//! machine keys, swept values and seed), so a changed spec never reuses a stale result.

use crate::SweepError;
use crate::provenance::sha256_bytes;
use compromis_mmu::MachineConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The command a sweep runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// `compromis sim`: one row per point and scheme.
    Sim,
    /// `compromis place`: one row per point and policy.
    Place,
}

impl Command {
    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            Command::Sim => "sim",
            Command::Place => "place",
        }
    }
}

/// Flags a spec may not set: the sweep sets them itself.
pub const RESERVED_FLAGS: [&str; 6] = ["seed", "output", "format", "output-file", "svg", "help"];

/// Flags whose values are paths: relative ones are taken from the spec file's folder, and the
/// files' checksums go into each point's `run.json`.
pub const PATH_FLAGS: [&str; 2] = ["trace", "config"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    command: Command,
    #[serde(default)]
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    flags: toml::Table,
    #[serde(default)]
    machine: toml::Table,
    #[serde(default)]
    sweep: toml::Table,
}

/// One swept parameter's value at a point.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Param {
    /// The spec key: a flag (`host-pages`) or a machine key (`machine.tlb.l2.entries`).
    pub key: String,
    /// Its column in the tidy table (snake_case: `host_pages`, `machine_tlb_l2_entries`).
    pub column: String,
    /// The value as text (as passed on the command line).
    pub value: String,
}

/// One configuration of a sweep.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Point {
    /// Position in the sweep (0-based).
    pub index: usize,
    /// Content-derived id (`p0003-1a2b3c4d5e6f`), the name of the point's folder.
    pub id: String,
    /// Swept values at this point, in spec order.
    pub params: Vec<Param>,
    /// The seed.
    pub seed: u64,
    /// The command's arguments (after the subcommand name), `--seed` last.
    pub args: Vec<String>,
    /// Machine-model keys set at this point (fixed and swept), as a TOML table.
    #[serde(skip)]
    pub machine: toml::Table,
    /// Input files named by the point's flags (`--trace`, `--config`).
    pub inputs: Vec<PathBuf>,
}

impl Point {
    /// The machine model of this point: the `--config` file (or the defaults) with the spec's
    /// machine keys set on top; `None` when the spec sets no machine key.
    pub fn machine_config(&self) -> Result<Option<MachineConfig>, SweepError> {
        if self.machine.is_empty() {
            return Ok(None);
        }
        let config = self
            .args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| self.args.get(i + 1));
        let mut base: toml::Table = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SweepError::Io {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| SweepError::Spec {
                    path: path.clone(),
                    line: None,
                    message: e.message().to_owned(),
                })?
            }
            None => toml::Table::new(),
        };
        merge(&mut base, &self.machine);
        let text = toml::to_string(&base).map_err(|e| SweepError::Spec {
            path: "machine keys".into(),
            line: None,
            message: e.to_string(),
        })?;
        MachineConfig::from_toml_str(&text, "the machine model with the spec's keys")
            .map(Some)
            .map_err(|e| SweepError::Mismatch(e.to_string()))
    }

    /// `key=value` of the swept values and the seed, for messages.
    pub fn label(&self) -> String {
        let mut v: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("{}={}", p.key, p.value))
            .collect();
        v.push(format!("seed={}", self.seed));
        v.join(" ")
    }
}

fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A parsed, validated sweep.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The spec file.
    pub path: PathBuf,
    /// SHA-256 of the spec file's bytes.
    pub sha256: String,
    /// The command.
    pub command: Command,
    /// Swept keys in order, with their columns.
    pub axes: Vec<(String, String)>,
    /// Every point, in order.
    pub points: Vec<Point>,
}

fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(&format!("\"{key}\""))
                .or_else(|| l.strip_prefix(key));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// `host-pages`, `host_pages` -> `host-pages`.
fn flag_name(k: &str) -> String {
    k.replace('_', "-")
}

/// A column name: snake_case, only `[a-z0-9_]`.
fn column_name(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| match x {
                toml::Value::Array(_) | toml::Value::Table(_) => None,
                x => scalar_text(x),
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

fn set_dotted(t: &mut toml::Table, dotted: &str, v: toml::Value) {
    let mut parts = dotted.split('.').peekable();
    let mut cur = t;
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_owned(), v);
            return;
        }
        let next = cur
            .entry(p.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !next.is_table() {
            *next = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(n) = next else {
            unreachable!()
        };
        cur = n;
    }
}

impl Spec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, SweepError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SweepError::Io {
            path: shown.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Spec::parse(&text, &shown, dir, sha256_bytes(&bytes)).map(|mut s| {
            s.path = path.to_path_buf();
            s
        })
    }

    /// Parses a spec's text; `shown` names it in errors, `dir` resolves relative paths.
    pub fn parse(text: &str, shown: &str, dir: &Path, sha256: String) -> Result<Spec, SweepError> {
        let err = |line: Option<usize>, message: String| SweepError::Spec {
            path: shown.to_owned(),
            line,
            message,
        };
        let file: SpecFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            err(line, e.message().trim_end().to_owned())
        })?;
        let seeds = file
            .seeds
            .unwrap_or_else(|| vec![compromis_types::DEFAULT_SEED]);
        if seeds.is_empty() {
            return Err(err(line_of(text, "seeds"), "`seeds` is empty".into()));
        }
        if file.command == Command::Place && !file.machine.is_empty() {
            return Err(err(
                None,
                "[machine] keys apply to `sim` only (place has no machine model)".into(),
            ));
        }
        // Machine keys must name keys of the machine model (checked against its defaults).
        let known = toml::Table::try_from(MachineConfig::default()).unwrap_or_default();
        let check_key = |dotted: &str, k: &str| -> Result<(), SweepError> {
            let mut t = &known;
            let parts: Vec<&str> = dotted.split('.').collect();
            for (i, p) in parts.iter().enumerate() {
                match t.get(*p) {
                    Some(toml::Value::Table(sub)) if i + 1 < parts.len() => t = sub,
                    Some(_) if i + 1 == parts.len() => return Ok(()),
                    _ => {
                        let mut valid: Vec<&str> = t.keys().map(String::as_str).collect();
                        valid.sort_unstable();
                        return Err(err(
                            line_of(text, k),
                            format!(
                                "unknown machine key `{dotted}`: valid keys here are {}",
                                valid.join(", ")
                            ),
                        ));
                    }
                }
            }
            Ok(())
        };
        fn leaves(t: &toml::Table, prefix: &str, out: &mut Vec<(String, String)>) {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(sub) => leaves(sub, &key, out),
                    _ => out.push((key, k.clone())),
                }
            }
        }
        let mut fixed_machine = Vec::new();
        leaves(&file.machine, "", &mut fixed_machine);
        for (dotted, k) in &fixed_machine {
            check_key(dotted, k)?;
        }
        let path_value = |flag: &str, v: String| -> String {
            if PATH_FLAGS.contains(&flag) && Path::new(&v).is_relative() {
                dir.join(&v).display().to_string()
            } else {
                v
            }
        };
        // Fixed flags.
        let mut fixed: Vec<String> = Vec::new();
        let mut inputs_fixed = Vec::new();
        for (k, v) in &file.flags {
            let flag = flag_name(k);
            if RESERVED_FLAGS.contains(&flag.as_str()) {
                return Err(err(
                    line_of(text, k),
                    format!(
                        "flag `{k}` is set by the sweep itself (use `seeds` for seeds; outputs go to --out)"
                    ),
                ));
            }
            match v {
                toml::Value::Boolean(true) => fixed.push(format!("--{flag}")),
                toml::Value::Boolean(false) => {}
                v => {
                    let s = scalar_text(v).ok_or_else(|| {
                        err(line_of(text, k), format!("flag `{k}`: a value must be a string, number, boolean or list of them"))
                    })?;
                    let s = path_value(&flag, s);
                    if PATH_FLAGS.contains(&flag.as_str()) {
                        inputs_fixed.push(PathBuf::from(&s));
                    }
                    fixed.push(format!("--{flag}"));
                    fixed.push(s);
                }
            }
        }
        // Axes.
        let mut axes: Vec<(String, String, Vec<toml::Value>)> = Vec::new();
        for (k, v) in &file.sweep {
            let toml::Value::Array(values) = v else {
                return Err(err(
                    line_of(text, k),
                    format!("sweep `{k}`: expected a list of values, found {v}"),
                ));
            };
            if values.is_empty() {
                return Err(err(
                    line_of(text, k),
                    format!("sweep `{k}`: the list is empty"),
                ));
            }
            let key = match k.strip_prefix("machine.") {
                Some(m) => {
                    if file.command == Command::Place {
                        return Err(err(
                            line_of(text, k),
                            format!("sweep `{k}`: machine keys apply to `sim` only"),
                        ));
                    }
                    check_key(m, k)?;
                    format!("machine.{m}")
                }
                None => {
                    let flag = flag_name(k);
                    if RESERVED_FLAGS.contains(&flag.as_str()) {
                        return Err(err(
                            line_of(text, k),
                            format!("sweep `{k}`: set by the sweep itself (use `seeds` for seeds)"),
                        ));
                    }
                    if file.flags.keys().any(|f| flag_name(f) == flag) {
                        return Err(err(
                            line_of(text, k),
                            format!("sweep `{k}`: also a fixed flag"),
                        ));
                    }
                    flag
                }
            };
            for x in values {
                if scalar_text(x).is_none() {
                    return Err(err(
                        line_of(text, k),
                        format!(
                            "sweep `{k}`: value {x} is not a string, number, boolean or list of them"
                        ),
                    ));
                }
            }
            axes.push((key, column_name(k), values.clone()));
        }
        // Cross product, first axis slowest, seeds innermost.
        let mut combos: Vec<Vec<usize>> = vec![Vec::new()];
        for (_, _, values) in &axes {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    (0..values.len()).map(move |i| {
                        let mut c = c.clone();
                        c.push(i);
                        c
                    })
                })
                .collect();
        }
        let mut points = Vec::with_capacity(combos.len() * seeds.len());
        for combo in &combos {
            for &seed in &seeds {
                let mut args = fixed.clone();
                let mut machine = file.machine.clone();
                let mut params = Vec::new();
                let mut inputs = inputs_fixed.clone();
                for ((key, column, values), &i) in axes.iter().zip(combo) {
                    let v = &values[i];
                    let text_value = scalar_text(v).unwrap_or_default();
                    if let Some(m) = key.strip_prefix("machine.") {
                        set_dotted(&mut machine, m, v.clone());
                    } else {
                        match v {
                            toml::Value::Boolean(true) => args.push(format!("--{key}")),
                            toml::Value::Boolean(false) => {}
                            _ => {
                                let s = path_value(key, text_value.clone());
                                if PATH_FLAGS.contains(&key.as_str()) {
                                    inputs.push(PathBuf::from(&s));
                                }
                                args.push(format!("--{key}"));
                                args.push(s);
                            }
                        }
                    }
                    params.push(Param {
                        key: key.clone(),
                        column: column.clone(),
                        value: text_value,
                    });
                }
                args.push("--seed".into());
                args.push(seed.to_string());
                let identity = serde_json::json!({
                    "command": file.command,
                    "args": args,
                    "machine": machine,
                });
                let hash = sha256_bytes(identity.to_string().as_bytes());
                let index = points.len();
                points.push(Point {
                    index,
                    id: format!("p{index:04}-{}", &hash[..12]),
                    params,
                    seed,
                    args,
                    machine,
                    inputs,
                });
            }
        }
        Ok(Spec {
            path: PathBuf::from(shown),
            sha256,
            command: file.command,
            axes: axes.into_iter().map(|(k, c, _)| (k, c)).collect(),
            points,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SweepError> {
        Spec::parse(text, "s.toml", Path::new("/specs"), String::new())
    }

    #[test]
    fn cross_product_in_spec_order_with_seeds_innermost() {
        let s = parse(
            "command = \"sim\"\nseeds = [1, 2]\n[flags]\nworkload = \"gups\"\nschemes = [\"ept\", \"compromis\"]\nno_populate = true\ntrace_x = false\n[sweep]\nhost-pages = [\"4k\", \"2m\"]\n\"machine.tlb.tagged\" = [true, false]\nfootprint = [\"64MiB\"]\n",
        )
        .unwrap();
        assert_eq!(s.points.len(), 8);
        let p = &s.points[5];
        assert_eq!(
            p.label(),
            "host-pages=2m machine.tlb.tagged=true footprint=64MiB seed=2"
        );
        assert_eq!(
            p.args,
            [
                "--workload",
                "gups",
                "--schemes",
                "ept,compromis",
                "--no-populate",
                "--host-pages",
                "2m",
                "--footprint",
                "64MiB",
                "--seed",
                "2"
            ]
        );
        assert_eq!(p.machine["tlb"]["tagged"].as_bool(), Some(true));
        assert_eq!(s.axes[1].1, "machine_tlb_tagged");
        // Ids are distinct and stable.
        let ids: std::collections::BTreeSet<_> = s.points.iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids.len(), 8);
        assert_eq!(parse("command = \"sim\"\nseeds = [1, 2]\n[flags]\nworkload = \"gups\"\nschemes = [\"ept\", \"compromis\"]\nno_populate = true\ntrace_x = false\n[sweep]\nhost-pages = [\"4k\", \"2m\"]\n\"machine.tlb.tagged\" = [true, false]\nfootprint = [\"64MiB\"]\n").unwrap().points[5].id, p.id);
        let m = p.machine_config().unwrap().unwrap();
        assert!(m.tlb.tagged);
    }

    #[test]
    fn relative_paths_come_from_the_spec_folder() {
        let s = parse("command = \"sim\"\n[flags]\ntrace = \"t.ctrace\"\n").unwrap();
        assert_eq!(s.points[0].inputs, [PathBuf::from("/specs/t.ctrace")]);
        assert_eq!(s.points[0].seed, 42);
    }

    #[test]
    fn bad_specs_name_file_line_and_value() {
        let e = parse("command = \"sim\"\n[sweep]\nfootprint = \"1GiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.toml") && e.contains("line 3") && e.contains("1GiB"),
            "{e}"
        );
        let e = parse("command = \"simm\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("simm"), "{e}");
        let e = parse("command = \"sim\"\n[flags]\nseed = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("seeds"), "{e}");
        let e = parse("command = \"place\"\n[sweep]\n\"machine.tlb.tagged\" = [true]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("machine keys apply to `sim` only"), "{e}");
        let e = parse("command = \"sim\"\nseeds = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("command = \"sim\"\n[sweep]\n\"machine.tlb.nope\" = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("tlb.nope") && e.contains("stlb"),
            "{e}"
        );
        let e = parse("command = \"sim\"\n[machine]\ncache.l9 = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cache.l9"), "{e}");
        let s =
            parse("command = \"sim\"\n[sweep]\n\"machine.cache.dram_latency\" = [-1]\n").unwrap();
        let e = s.points[0].machine_config().unwrap_err().to_string();
        assert!(e.contains("-1"), "{e}");
    }
}
