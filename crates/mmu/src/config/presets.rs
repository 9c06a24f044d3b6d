//! Machine presets: sourced machine-model files of real servers, embedded in the binary.
//!
//! Each preset is a TOML file in `crates/mmu/machines/` in the format of
//! `compromis sim --config FILE`, every value with its source in a comment. A machine is resolved
//! in layers: the model's base values ([`super::keys::TABLE`]), then the preset's keys, then the
//! keys of a user's file ([`resolve`]). [`DEFAULT_MACHINE`] is the preset every command uses when
//! none is named.

use super::keys::{self, Value};
use super::{ConfigError, MachineConfig};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// One embedded machine preset.
#[derive(Debug, PartialEq, Eq)]
pub struct Preset {
    /// Name given to `--machine`.
    pub name: &'static str,
    /// One line: the CPU and what a single thread of it can use.
    pub description: &'static str,
    /// The TOML file (every value with its source in a comment).
    pub text: &'static str,
}

/// Every preset, in `compromis config --list` order.
pub static PRESETS: [Preset; 3] = [
    Preset {
        name: "skylake-sp",
        description: "Intel Xeon Platinum 8180 (Skylake-SP, 2017): whole 38.5 MiB 11-way L3, DDR4-2666",
        text: include_str!("../../machines/skylake-sp.toml"),
    },
    Preset {
        name: "icelake-sp",
        description: "Intel Xeon Platinum 8380 (Ice Lake-SP, 2021): whole 60 MiB L3, 2048-entry STLB",
        text: include_str!("../../machines/icelake-sp.toml"),
    },
    Preset {
        name: "zen3-milan",
        description: "AMD EPYC 7763 (Zen 3 Milan, 2021): one CCD's 32 MiB L3, 2048-entry L2 DTLB",
        text: include_str!("../../machines/zen3-milan.toml"),
    },
];

/// The machine every command simulates unless `--machine` names another: a Skylake-SP server
/// whose whole shared L3 a single-threaded benchmark can use (the hardware anchors of the
/// README were measured on a Skylake-SP-class Intel server).
pub const DEFAULT_MACHINE: &str = "skylake-sp";

/// A preset chosen by name (`--machine NAME`); parsing an unknown name lists the valid ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine(&'static Preset);

impl Machine {
    /// The preset.
    pub fn preset(self) -> &'static Preset {
        self.0
    }
    /// Its name.
    pub fn name(self) -> &'static str {
        self.0.name
    }
    /// The preset every command uses by default ([`DEFAULT_MACHINE`]).
    pub fn default_machine() -> Machine {
        Machine(&PRESETS[0])
    }
    /// The machine model of this preset alone (validated).
    pub fn config(self) -> Result<MachineConfig, ConfigError> {
        resolve(self, None)
    }
}

impl Default for Machine {
    fn default() -> Self {
        Machine::default_machine()
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl FromStr for Machine {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Machine, ConfigError> {
        PRESETS
            .iter()
            .find(|p| p.name == s)
            .map(Machine)
            .ok_or_else(|| ConfigError::Value {
                key: "machine".into(),
                reason: format!(
                    "unknown machine \"{s}\": valid names are {} (`compromis config --list`)",
                    names().join(", ")
                ),
            })
    }
}

/// The names of every preset.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// The default machine's model ([`DEFAULT_MACHINE`]). Every embedded preset is valid (tested),
/// so the model's base values are returned only if that ever failed.
pub fn default_config() -> MachineConfig {
    Machine::default_machine()
        .config()
        .unwrap_or_else(|_| MachineConfig::default())
}

/// The machine model of `machine`, with the keys of the file at `file` (if any) over it.
///
/// Errors name the file and, when the offending key is written in it, its line; a problem
/// that only the combination shows (say the file's L3 latency below the preset's L2 latency)
/// names the file and the machine.
pub fn resolve(machine: Machine, file: Option<&Path>) -> Result<MachineConfig, ConfigError> {
    let Some(path) = file else {
        let preset = machine.preset();
        let shown = format!("machine preset {}", preset.name);
        return finish(parse_table(preset.text, &shown)?, preset.text, &shown);
    };
    let shown = path.display().to_string();
    let text = super::read_machine_file(path)?;
    resolve_text(machine, &text, &shown)
}

/// [`resolve`] with the file's text given (`path` names it in errors).
pub fn resolve_text(
    machine: Machine,
    text: &str,
    path: &str,
) -> Result<MachineConfig, ConfigError> {
    // The file alone first: syntax errors, unknown keys and wrong types, located by the parser.
    toml::from_str::<MachineConfig>(text).map_err(|e| parse_error(text, path, &e))?;
    let preset = machine.preset();
    let mut table = parse_table(preset.text, &format!("machine preset {}", preset.name))?;
    let file = parse_table(text, path)?;
    merge(&mut table, file);
    let shown = format!("{path} (over machine {})", preset.name);
    finish(table, text, &shown)
}

/// The preset's file with every key the preset does not set added (with the model's base value
/// and its text), so that what is printed is the whole resolved machine and parses back to it.
pub fn resolved_toml(machine: Machine) -> String {
    let preset = machine.preset();
    let Ok(mut doc) = preset.text.parse::<toml_edit::DocumentMut>() else {
        return preset.text.to_owned();
    };
    let base = MachineConfig::default();
    for k in keys::all() {
        let parts: Vec<&str> = k.path.split('.').collect();
        let Some((leaf, tables)) = parts.split_last() else {
            continue;
        };
        let Some(t) = table_at(doc.as_table_mut(), tables) else {
            continue;
        };
        if t.contains_key(leaf) {
            continue;
        }
        let Ok(value) = Value::toml(k.get(&base)).parse::<toml_edit::Value>() else {
            continue;
        };
        t.insert(leaf, toml_edit::Item::Value(value));
        if let Some(mut key) = t.key_mut(leaf) {
            let mut prefix = String::from("# Not set by this preset: the model's base value.\n");
            for line in k.doc.lines() {
                prefix.push_str("# ");
                prefix.push_str(line);
                prefix.push('\n');
            }
            key.leaf_decor_mut().set_prefix(prefix);
        }
    }
    doc.to_string()
}

/// The table at `path` under `t`, created where missing (`None` if a key on the way is a value).
fn table_at<'a>(t: &'a mut toml_edit::Table, path: &[&str]) -> Option<&'a mut toml_edit::Table> {
    let Some((first, rest)) = path.split_first() else {
        return Some(t);
    };
    let next = t
        .entry(first)
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_mut()?;
    table_at(next, rest)
}

/// The keys of the model a preset's file does not set (empty for a complete preset).
pub fn unset_keys(preset: &Preset) -> Vec<&'static str> {
    let Ok(table) = preset.text.parse::<toml::Table>() else {
        return keys::all().map(|k| k.path).collect();
    };
    keys::all()
        .filter(|k| {
            let mut t = &table;
            let parts: Vec<&str> = k.path.split('.').collect();
            let Some((leaf, tables)) = parts.split_last() else {
                return true;
            };
            for name in tables {
                match t.get(*name).and_then(toml::Value::as_table) {
                    Some(next) => t = next,
                    None => return true,
                }
            }
            !t.contains_key(*leaf)
        })
        .map(|k| k.path)
        .collect()
}

fn parse_error(text: &str, path: &str, e: &toml::de::Error) -> ConfigError {
    let mut message = String::new();
    if let Some(span) = e.span() {
        let (line, col) = super::line_col(text, span.start);
        message = format!("line {line}, column {col}: ");
    }
    message.push_str(e.message().trim_end());
    ConfigError::Parse {
        path: path.to_owned(),
        message,
    }
}

fn parse_table(text: &str, path: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| parse_error(text, path, &e))
}

/// Deep merge: `over`'s keys replace `base`'s, tables merged key by key.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Deserializes the merged table and validates it; a validation error is located in `text`
/// (the last layer's file) when that file sets the offending key.
fn finish(table: toml::Table, text: &str, path: &str) -> Result<MachineConfig, ConfigError> {
    let cfg: MachineConfig =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_owned(),
                message: e.message().trim_end().to_owned(),
            })?;
    cfg.validate_in(text, path)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_validates_and_sets_every_key() {
        for p in &PRESETS {
            let m: Machine = p.name.parse().unwrap();
            let cfg = m.config().unwrap_or_else(|e| panic!("{}: {e}", p.name));
            cfg.validate().unwrap();
            // The file alone, as `--config` would read it, gives the same machine.
            assert_eq!(
                MachineConfig::from_toml_str(p.text, p.name).unwrap(),
                cfg,
                "{}",
                p.name
            );
            assert_eq!(
                unset_keys(p),
                Vec::<&str>::new(),
                "preset {} does not set these keys (add each with its source)",
                p.name
            );
        }
    }

    #[test]
    fn every_value_line_of_a_preset_has_a_comment_above_it() {
        for p in &PRESETS {
            let lines: Vec<&str> = p.text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                if l.contains(" = ") && !l.starts_with('#') {
                    assert!(
                        i > 0 && lines[i - 1].starts_with('#'),
                        "{}: no comment above {l:?}",
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn presets_differ_from_each_other_and_from_the_base() {
        let cfgs: Vec<MachineConfig> = PRESETS
            .iter()
            .map(|p| p.name.parse::<Machine>().unwrap().config().unwrap())
            .collect();
        for (i, a) in cfgs.iter().enumerate() {
            assert_ne!(a, &MachineConfig::default());
            for b in &cfgs[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn the_default_machine_is_a_preset_with_a_server_llc() {
        let m = Machine::default_machine();
        assert_eq!(m.name(), DEFAULT_MACHINE);
        let cfg = default_config();
        assert_eq!(cfg, m.config().unwrap());
        assert!(cfg.cache.llc.size.0 > 16 << 20, "{}", cfg.cache.llc.size);
    }

    #[test]
    fn unknown_machine_lists_the_valid_names() {
        let e = "epyc".parse::<Machine>().unwrap_err().to_string();
        for p in &PRESETS {
            assert!(e.contains(p.name), "{e}");
        }
    }

    #[test]
    fn a_file_overrides_only_the_keys_it_sets() {
        let m: Machine = "zen3-milan".parse().unwrap();
        let base = m.config().unwrap();
        let got = resolve_text(
            m,
            "[cache.llc]\nlatency = 60\n[tlb]\ntagged = false\n",
            "f.toml",
        )
        .unwrap();
        assert_eq!(got.cache.llc.latency, 60);
        assert!(!got.tlb.tagged);
        // Everything else, the same level's other keys included, is the preset's.
        assert_eq!(got.cache.llc.size, base.cache.llc.size);
        assert_eq!(got.cache.l2, base.cache.l2);
        assert_eq!(got.tlb.stlb, base.tlb.stlb);
        assert_eq!(got.exits, base.exits);
    }

    #[test]
    fn file_errors_name_the_file_line_and_machine() {
        let m = Machine::default_machine();
        let e = resolve_text(m, "[cache]\nbogus = 1\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.toml") && e.contains("line 2"), "{e}");
        // Valid alone, impossible over the preset: the L3 faster than the preset's L2 (14).
        let e = resolve_text(m, "\n[cache.llc]\nlatency = 10\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.toml") && e.contains("skylake-sp") && e.contains("line 3"),
            "{e}"
        );
    }

    #[test]
    fn resolved_toml_parses_back_to_the_preset_and_has_every_key() {
        for p in &PRESETS {
            let m: Machine = p.name.parse().unwrap();
            let text = resolved_toml(m);
            assert_eq!(
                MachineConfig::from_toml_str(&text, p.name).unwrap(),
                m.config().unwrap()
            );
            let printed = Preset {
                name: p.name,
                description: p.description,
                text: Box::leak(text.into_boxed_str()),
            };
            assert!(unset_keys(&printed).is_empty());
        }
    }

    #[test]
    fn resolved_toml_fills_keys_a_preset_leaves_out() {
        let partial = Preset {
            name: "partial",
            description: "",
            text: "# x\n[cache.llc]\n# src\nsize = \"8MiB\"\n",
        };
        let m = Machine(Box::leak(Box::new(partial)));
        let text = resolved_toml(m);
        let cfg = MachineConfig::from_toml_str(&text, "partial").unwrap();
        assert_eq!(cfg.cache.llc.size.0, 8 << 20);
        assert_eq!(cfg.tlb, MachineConfig::default().tlb);
        assert!(text.contains("Not set by this preset"), "{text}");
        let printed = Preset {
            name: "p",
            description: "",
            text: Box::leak(text.into_boxed_str()),
        };
        assert!(unset_keys(&printed).is_empty());
    }
}
