//! The machine model: every size and latency of the translation structures, caches and VM exits.
//!
//! One TOML file covers it all (`compromis config --defaults` prints the defaults with a source on
//! each value). Every key is declared once, in [`keys::TABLE`]: its path, field, default, valid
//! range and source. Unknown keys and impossible values are errors, found by
//! [`MachineConfig::validate`] before any simulation starts, and located in a file by the TOML
//! parser's spans.

pub mod keys;
pub mod presets;

use crate::setassoc::{GeometryError, SetAssoc};
use compromis_types::ByteSize;
use keys::Value;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use thiserror::Error;

/// Why a configuration is unusable.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A TLB / PWC geometry is impossible.
    #[error("invalid geometry: {0}")]
    Geometry(#[from] GeometryError),
    /// A cache whose size is not ways x sets x line, or whose line is not a power of two.
    #[error("cache {name}: {reason}")]
    Cache {
        /// Which cache.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other impossible value.
    #[error("{key}: {reason}")]
    Value {
        /// The TOML key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The TOML did not parse or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A file parsed but one of its values is impossible.
    #[error("{path}{}: {problem}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    InFile {
        /// The file.
        path: String,
        /// The line of the offending key, when it could be located (1-based).
        line: Option<usize>,
        /// What is wrong (already part of this error's message, so not a `source`).
        problem: Box<ConfigError>,
    },
    /// The file could not be read.
    #[error("cannot read machine configuration {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Entries and associativity of a TLB-like structure (`entries = 0` disables it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geometry {
    /// Number of entries (0 = absent).
    pub entries: usize,
    /// Associativity (`entries` for fully associative).
    pub ways: usize,
}

impl Geometry {
    /// `entries` entries, `ways` ways.
    pub const fn new(entries: usize, ways: usize) -> Geometry {
        Geometry { entries, ways }
    }
    /// An absent structure.
    pub const OFF: Geometry = Geometry {
        entries: 0,
        ways: 0,
    };
    /// Builds the structure.
    pub fn build(&self, name: &str) -> Result<SetAssoc, GeometryError> {
        SetAssoc::new(name, self.entries, self.ways)
    }

    /// Checks the shape without allocating anything: at most [`MAX_TLB_ENTRIES`] entries and
    /// [`MAX_TLB_WAYS`] ways, ways non-zero and dividing the entries. `name` is the TOML key.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::Value {
            key: name.to_owned(),
            reason,
        };
        if self.entries == 0 {
            return Ok(());
        }
        if self.entries > MAX_TLB_ENTRIES {
            return Err(bad(format!(
                "{} entries is more than the {MAX_TLB_ENTRIES} accepted (the simulator keeps 24 \
                 bytes per entry)",
                self.entries
            )));
        }
        if self.ways > MAX_TLB_WAYS {
            return Err(bad(format!(
                "{} ways is more than the {MAX_TLB_WAYS} accepted (each lookup scans a set)",
                self.ways
            )));
        }
        if self.ways == 0 {
            return Err(GeometryError::ZeroWays {
                name: name.to_owned(),
            }
            .into());
        }
        if !self.entries.is_multiple_of(self.ways) {
            return Err(GeometryError::NotMultiple {
                name: name.to_owned(),
                entries: self.entries,
                ways: self.ways,
            }
            .into());
        }
        Ok(())
    }
}

/// The largest machine file read (1 MiB; the complete default file is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Most entries a TLB or paging-structure cache may have (1 Mi entries, 24 MiB of simulator
/// state; real second-level TLBs have a few thousand).
pub const MAX_TLB_ENTRIES: usize = 1 << 20;
/// Most ways a TLB may have (a fully associative structure has as many ways as entries; real
/// ones have at most a few thousand).
pub const MAX_TLB_WAYS: usize = 4096;

/// TLBs (guest-virtual -> final physical).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlbConfig {
    /// L1 data TLB, 4 KiB pages.
    pub l1d_4k: Geometry,
    /// L1 data TLB, 2 MiB pages.
    pub l1d_2m: Geometry,
    /// L1 data TLB, 1 GiB pages.
    pub l1d_1g: Geometry,
    /// L1 instruction TLB, 4 KiB pages.
    pub l1i_4k: Geometry,
    /// L1 instruction TLB, 2 MiB pages.
    pub l1i_2m: Geometry,
    /// Second-level (unified) TLB for 4 KiB and 2 MiB pages.
    pub stlb: Geometry,
    /// Second-level TLB for 1 GiB pages.
    pub stlb_1g: Geometry,
    /// Tagged TLBs (PCID/VPID): a CR3 load does not flush. When false every CR3 load flushes the
    /// TLBs and page-walk caches.
    pub tagged: bool,
}

impl Default for TlbConfig {
    fn default() -> Self {
        MachineConfig::default().tlb
    }
}

/// Page-walk caches (Intel paging-structure caches) for the upper levels of the guest walk, and
/// the structures that speed up the host (EPT) dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalkCacheConfig {
    /// Caches level-4 entries (PML4E), keyed by VA bits 47:39. Level-5 entries with 5-level
    /// paging are cached here too.
    pub pml4: Geometry,
    /// Caches level-3 entries (PDPTE), keyed by VA bits 47:30.
    pub pdpt: Geometry,
    /// Caches level-2 entries (PDE), keyed by VA bits 47:21.
    pub pd: Geometry,
    /// Nested TLB: gPA page -> hPA page, for the gPAs met during a guest walk under EPT.
    pub nested_tlb: Geometry,
    /// Host page-walk cache for EPT level-4 entries, keyed by gPA bits.
    pub host_pml4: Geometry,
    /// Host page-walk cache for EPT level-3 entries.
    pub host_pdpt: Geometry,
    /// Host page-walk cache for EPT level-2 entries.
    pub host_pd: Geometry,
}

impl Default for WalkCacheConfig {
    fn default() -> Self {
        MachineConfig::default().walk_caches
    }
}

/// Serde helpers for [`ByteSize`] fields: TOML accepts `"32KiB"`-style strings and plain integers
/// (bytes); values are written back as strings.
mod byte_size {
    use compromis_types::ByteSize;
    use serde::de::{self, Unexpected, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(super) fn serialize<S: Serializer>(v: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        d.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = ByteSize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as \"32KiB\" or \"2MiB\", or a number of bytes")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
            Ok(ByteSize(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
            u64::try_from(v)
                .map(ByteSize)
                .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
            v.parse::<ByteSize>().map_err(E::custom)
        }
    }
}

/// One level of the data-cache hierarchy (physically indexed, physically tagged, LRU).
///
/// `size = 0` removes the level. Otherwise `size` must be `ways x sets x line` for a whole number
/// of sets; the set index is the line number modulo the number of sets, so the number of sets need
/// not be a power of two (an 11-way 1.375 MiB slice is fine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheLevel {
    /// Capacity (`"32KiB"`, `"1MiB"` or a number of bytes; 0 = absent).
    #[serde(with = "byte_size")]
    pub size: ByteSize,
    /// Associativity.
    pub ways: usize,
    /// Line size in bytes (a power of two from 8 to 4096).
    pub line: u64,
    /// Load-to-use latency in cycles of a hit in this level (the whole latency, not the increment
    /// over the level above).
    pub latency: u64,
}

/// Most lines a cache level may hold (4 Mi lines, e.g. 256 MiB of 64 B lines: the simulator
/// allocates 8 bytes of state per line).
pub const MAX_CACHE_LINES: u64 = 1 << 22;
/// Most ways a cache level may have (each access scans a set; hardware caches have at most a few
/// dozen).
pub const MAX_CACHE_WAYS: usize = 256;
/// Largest latency or cost in cycles accepted for any single event (keeps totals far from
/// overflowing 64 bits).
pub const MAX_CYCLES: u64 = 1_000_000_000;

impl CacheLevel {
    /// A level of `size` bytes, `ways`-way, `line`-byte lines, `latency` cycles.
    pub const fn new(size: ByteSize, ways: usize, line: u64, latency: u64) -> CacheLevel {
        CacheLevel {
            size,
            ways,
            line,
            latency,
        }
    }
    /// An absent level.
    pub const OFF: CacheLevel = CacheLevel {
        size: ByteSize(0),
        ways: 0,
        line: 64,
        latency: 0,
    };
    /// Whether the level exists.
    pub const fn is_enabled(&self) -> bool {
        self.size.0 != 0
    }
    /// Number of lines it holds (0 when absent).
    pub fn lines(&self) -> u64 {
        self.size.0.checked_div(self.line).unwrap_or(0)
    }
    /// Number of sets (0 when absent or impossible).
    pub fn sets(&self) -> u64 {
        self.size
            .0
            .checked_div((self.ways as u64).saturating_mul(self.line))
            .unwrap_or(0)
    }
    /// Checks this level; `key` is its TOML table (`cache.l2`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| ConfigError::Value {
            key: format!("{key}.{field}"),
            reason,
        };
        Value::Line(self.line).check(&format!("{key}.line"))?;
        Value::Cycles(self.latency).check(&format!("{key}.latency"))?;
        if !self.is_enabled() {
            return Ok(());
        }
        if self.ways == 0 {
            return Err(err(
                "ways",
                format!(
                    "0 ways with size = {} (use size = 0 to remove the level)",
                    self.size
                ),
            ));
        }
        if self.ways > MAX_CACHE_WAYS {
            return Err(err(
                "ways",
                format!(
                    "{} ways is more than the {MAX_CACHE_WAYS} accepted",
                    self.ways
                ),
            ));
        }
        // Whatever else `SetAssoc` requires of the associativity (e.g. a maximum), checked on a
        // one-set structure so nothing large is allocated.
        if let Err(e) = SetAssoc::new(&format!("{key}.ways"), self.ways, self.ways) {
            return Err(err("ways", format!("{} ways: {e}", self.ways)));
        }
        if self.lines() > MAX_CACHE_LINES {
            return Err(err(
                "size",
                format!(
                    "{} is {} lines of {} B, more than the {MAX_CACHE_LINES} lines the simulator accepts",
                    self.size,
                    self.lines(),
                    self.line
                ),
            ));
        }
        let per_set = (self.ways as u64).saturating_mul(self.line);
        if !self.size.0.is_multiple_of(per_set) || self.size.0 < per_set {
            return Err(err(
                "size",
                format!(
                    "{} ({} bytes) is not ways x sets x line: {} ways x {} B lines = {} B per set, and {} is not a \
                     positive multiple of {}",
                    self.size, self.size.0, self.ways, self.line, per_set, self.size.0, per_set
                ),
            ));
        }
        Ok(())
    }
}

/// The data-cache hierarchy: L1D, L2, LLC, then DRAM. Both data accesses and page-walk references
/// go through it.
///
/// In a file every key is optional, inside a level too: `[cache.l2]` with only `size = "2MiB"`
/// keeps the L2's default ways, line and latency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PartialCacheConfig")]
pub struct CacheConfig {
    /// First-level data cache.
    pub l1d: CacheLevel,
    /// Second-level (private, unified) cache.
    pub l2: CacheLevel,
    /// Last-level cache (this core's share).
    pub llc: CacheLevel,
    /// Load-to-use latency in cycles of an access that misses every level.
    pub dram_latency: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        MachineConfig::default().cache
    }
}

/// A cache level as written in a file: missing keys keep the level's defaults.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PartialLevel {
    #[serde(default, deserialize_with = "opt_byte_size")]
    size: Option<ByteSize>,
    ways: Option<usize>,
    line: Option<u64>,
    latency: Option<u64>,
}

fn opt_byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    byte_size::deserialize(d).map(Some)
}

impl PartialLevel {
    fn over(self, d: CacheLevel) -> CacheLevel {
        CacheLevel {
            size: self.size.unwrap_or(d.size),
            ways: self.ways.unwrap_or(d.ways),
            line: self.line.unwrap_or(d.line),
            latency: self.latency.unwrap_or(d.latency),
        }
    }
}

/// `[cache]` as written in a file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PartialCacheConfig {
    #[serde(default)]
    l1d: PartialLevel,
    #[serde(default)]
    l2: PartialLevel,
    #[serde(default)]
    llc: PartialLevel,
    dram_latency: Option<u64>,
}

impl From<PartialCacheConfig> for CacheConfig {
    fn from(p: PartialCacheConfig) -> CacheConfig {
        let d = CacheConfig::default();
        CacheConfig {
            l1d: p.l1d.over(d.l1d),
            l2: p.l2.over(d.l2),
            llc: p.llc.over(d.llc),
            dram_latency: p.dram_latency.unwrap_or(d.dram_latency),
        }
    }
}

impl CacheConfig {
    /// Every level absent: each access goes to DRAM.
    pub fn dram_only(dram_latency: u64) -> CacheConfig {
        CacheConfig {
            l1d: CacheLevel::OFF,
            l2: CacheLevel::OFF,
            llc: CacheLevel::OFF,
            dram_latency,
        }
    }
    /// Checks every level.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let levels = [
            ("cache.l1d", &self.l1d),
            ("cache.l2", &self.l2),
            ("cache.llc", &self.llc),
        ];
        for (key, l) in levels {
            l.validate(key)?;
        }
        Value::Cycles(self.dram_latency).check("cache.dram_latency")?;
        // A level below never answers faster than one above it (the cycle model and its
        // monotonicity properties rely on it).
        let mut above: Option<(&str, u64)> = None;
        for (key, l) in levels.into_iter().filter(|(_, l)| l.is_enabled()) {
            if let Some((k, lat)) = above
                && l.latency < lat
            {
                return Err(ConfigError::Value {
                    key: format!("{key}.latency"),
                    reason: format!(
                        "{} cycles is less than the latency of a level above it ({k}.latency = {lat})",
                        l.latency
                    ),
                });
            }
            above = Some((key, l.latency));
        }
        if let Some((k, lat)) = above
            && self.dram_latency < lat
        {
            return Err(ConfigError::Value {
                key: "cache.dram_latency".into(),
                reason: format!(
                    "{} cycles is less than the latency of a cache level ({k}.latency = {lat})",
                    self.dram_latency
                ),
            });
        }
        Ok(())
    }
}

/// Latencies of the translation structures, in cycles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// Added per second-level TLB hit (an L1 TLB hit is hidden in the load-to-use latency).
    pub stlb_hit: u64,
    /// Per guest page-walk-cache hit (one lookup at the start of a walk).
    pub pwc_hit: u64,
    /// Per nested-TLB or host page-walk-cache hit.
    pub ntlb_hit: u64,
    /// Per guest-physical address translated by a segment register (compare + add).
    pub segment: u64,
    /// Fixed cost of every completed page walk (walker start after the STLB miss, and the fill of
    /// the TLBs with the result), on top of its references.
    pub walk_start: u64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        MachineConfig::default().latency
    }
}

/// Cost in cycles of one VM exit (round trip plus the hypervisor's handler), by cause, and of the
/// guest kernel's own page-fault handling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExitConfig {
    /// Shadow paging: a trapped write to a guest page-table page (emulate the write, update the
    /// shadow entry).
    pub pt_write: u64,
    /// Shadow paging: a guest CR3 load (find or build the shadow root).
    pub cr3_load: u64,
    /// Shadow paging: an intercepted guest page fault reflected to the guest.
    pub page_fault: u64,
    /// Shadow paging: a guest INVLPG.
    pub invlpg: u64,
    /// The guest kernel's own page-fault handling, zeroing excluded (paid by every scheme, native
    /// included, and by the perfect-TLB baseline).
    pub guest_page_fault: u64,
    /// The guest kernel zeroing 4 KiB of a new page (a 2 MiB fault zeroes 512 times as much).
    pub zero_4k: u64,
    /// How the shadow-paging hypervisor keeps its tables in sync (`oos` or `eager`).
    pub shadow_sync: compromis_vmem::SyncMode,
    /// Shadow paging, out of sync: first guest write to an in-sync last-level table (the
    /// hypervisor unprotects it and marks it unsync).
    pub unsync: u64,
    /// Shadow paging, out of sync: per guest entry reconciled at INVLPG or CR3 load.
    pub resync_entry: u64,
}

impl Default for ExitConfig {
    fn default() -> Self {
        MachineConfig::default().exits
    }
}

/// The core outside the memory system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    /// Cycles per instruction with a perfect memory system (data-access and translation latency
    /// are added on top).
    pub base_cpi: f64,
    /// Memory accesses in flight at once (L1D fill buffers / MSHRs); 1 = the serial model.
    pub max_outstanding: u64,
    /// Instruction window (reorder buffer): an access cannot start before every access this many
    /// instructions older has completed.
    pub window: u64,
    /// Page walks in flight at once (page-miss handlers).
    pub page_walkers: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        MachineConfig::default().core
    }
}

/// The machine model. Its defaults are those of [`keys::TABLE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineConfig {
    /// TLBs.
    pub tlb: TlbConfig,
    /// Page-walk caches, nested TLB, host walk caches.
    pub walk_caches: WalkCacheConfig,
    /// Data caches (L1D, L2, LLC) and DRAM.
    pub cache: CacheConfig,
    /// Latencies of TLB / walk-cache / segment hits.
    pub latency: LatencyConfig,
    /// VM-exit and guest page-fault costs.
    pub exits: ExitConfig,
    /// The core.
    pub core: CoreConfig,
}

impl Default for MachineConfig {
    fn default() -> Self {
        keys::defaults()
    }
}

impl MachineConfig {
    /// Every structure absent and every number zero: what [`keys::TABLE`] fills in.
    const BLANK: MachineConfig = {
        let off = Geometry::OFF;
        MachineConfig {
            tlb: TlbConfig {
                l1d_4k: off,
                l1d_2m: off,
                l1d_1g: off,
                l1i_4k: off,
                l1i_2m: off,
                stlb: off,
                stlb_1g: off,
                tagged: false,
            },
            walk_caches: WalkCacheConfig {
                pml4: off,
                pdpt: off,
                pd: off,
                nested_tlb: off,
                host_pml4: off,
                host_pdpt: off,
                host_pd: off,
            },
            cache: CacheConfig {
                l1d: CacheLevel::OFF,
                l2: CacheLevel::OFF,
                llc: CacheLevel::OFF,
                dram_latency: 0,
            },
            latency: LatencyConfig {
                stlb_hit: 0,
                pwc_hit: 0,
                ntlb_hit: 0,
                segment: 0,
                walk_start: 0,
            },
            exits: ExitConfig {
                pt_write: 0,
                cr3_load: 0,
                page_fault: 0,
                invlpg: 0,
                guest_page_fault: 0,
                zero_4k: 0,
                shadow_sync: compromis_vmem::SyncMode::Oos,
                unsync: 0,
                resync_entry: 0,
            },
            core: CoreConfig {
                base_cpi: 0.0,
                max_outstanding: 0,
                window: 0,
                page_walkers: 0,
            },
        }
    };

    /// Every TLB-like structure disabled: each access walks, and walks see no caching. The data
    /// caches and latencies keep their defaults.
    pub fn no_caches() -> MachineConfig {
        let blank = MachineConfig::BLANK;
        MachineConfig {
            tlb: TlbConfig {
                tagged: true,
                ..blank.tlb
            },
            walk_caches: blank.walk_caches,
            ..MachineConfig::default()
        }
    }

    /// Checks every value; the first problem found is returned. Each key alone first, by the
    /// range its kind in [`keys::TABLE`] gives, then the relations between keys (a cache level's
    /// shape, latencies down the hierarchy).
    pub fn validate(&self) -> Result<(), ConfigError> {
        keys::check(self)?;
        self.cache.validate()
    }

    /// Parses and validates a machine-model file's text; `path` names it in errors. Keys left out
    /// keep their defaults; an unknown key is an error naming it and its line.
    pub fn from_toml_str(text: &str, path: &str) -> Result<MachineConfig, ConfigError> {
        let cfg: MachineConfig = toml::from_str(text).map_err(|e| {
            let mut message = String::new();
            if let Some(span) = e.span() {
                let (line, col) = line_col(text, span.start);
                let _ = write!(message, "line {line}, column {col}: ");
            }
            message.push_str(e.message().trim_end());
            ConfigError::Parse {
                path: path.to_owned(),
                message,
            }
        })?;
        cfg.validate_in(text, path)?;
        Ok(cfg)
    }

    /// [`MachineConfig::validate`], with a problem located in the file `text` (named `path`):
    /// its line when the file sets the offending key.
    pub(crate) fn validate_in(&self, text: &str, path: &str) -> Result<(), ConfigError> {
        self.validate().map_err(|e| {
            let key = match &e {
                ConfigError::Value { key, .. } => Some(key.as_str()),
                ConfigError::Geometry(g) => Some(g.name()),
                _ => None,
            };
            let line = key
                .and_then(|k| value_span(text, k))
                .map(|span| line_col(text, span.start).0);
            ConfigError::InFile {
                path: path.to_owned(),
                line,
                problem: Box::new(e),
            }
        })
    }

    /// Reads, parses and validates a machine-model file (at most [`MAX_CONFIG_BYTES`]).
    pub fn load(path: &std::path::Path) -> Result<MachineConfig, ConfigError> {
        let text = read_machine_file(path)?;
        MachineConfig::from_toml_str(&text, &path.display().to_string())
    }

    /// The default machine-model file: every key present, each with its meaning and source.
    /// Parsing it gives back `MachineConfig::default()` exactly (tested).
    pub fn defaults_toml() -> String {
        let mut o = String::from(HEADER);
        keys::write_defaults(&mut o);
        o
    }
}

const HEADER: &str = "\
# Compromis machine model. Every key is optional: a key left out keeps the value shown here.
# Sizes accept \"32KiB\", \"1MiB\" or a number of bytes; latencies and costs are in cycles.
# Check a file with `compromis config --check FILE`; use it with `compromis sim --config FILE`.
#
# Sources cited as [n] below:
# [1] Intel 64 and IA-32 Architectures Optimization Reference Manual (order no. 248966), Skylake
#     client microarchitecture: cache parameters table and TLB parameters table (Table 2-15 in -045).
# [2] AnandTech, \"The Intel Skylake-X Review: Core i9 7900X, i7 7820X and i7 7800X Tested\" (2017),
#     page \"I Keep My Cache Private\": Skylake-S vs Skylake-SP caches and TLBs.
# [3] AnandTech, \"Intel Skylake-EP vs AMD EPYC 7000\" (2017), page \"Memory Subsystem: Latency\"
#     (LMBench random-load latency).
# [4] Mynavi News, Haswell microbenchmarks (2013-06-21), D-TLB size and latency graphs.
# [5] Intel Developer Zone, \"Virtualization and Performance: Understanding VM Exits\" (2009).
# [6] Agesen, Mattson, Rugina, Sheldon, \"Software Techniques for Avoiding Hardware Virtualization
#     Exits\", USENIX ATC 2012.
# [7] LKML, KVM SVM VMRUN-path timing thread (December 2020): about 1,350 cycles around VMRUN.
# [8] Linux KVM commit \"KVM: Update shadow pte on write to guest pte\" (Avi Kivity): demand paging
#     under shadow paging takes up to three exits per guest page fault.
# [9] Xen Project blog, \"Xen 3.3 Feature: Shadow 3\": emulating guest page-table writes.
# [10] \"Page fault latency measurement\", ddumbying.vercel.app/experiments/pagefault-latency.
# [11] AnandTech, \"AMD Rome Second Generation EPYC Review\" (2019), page \"Memory Subsystem: Latency\"
#      (Xeon Platinum 8280: L1D 4 cycles, 1 MB L2 14 cycles).
# [12] Team notes, ../shared/docs/compromis.md: typical sizes used by recent papers.
# [13] Linux commits \"x86/clear_page: introduce clear_pages()\" and \"mm: folio_zero_user: clear pages
#      sequentially\" (Ankur Arora, 2026): measured page-clearing bandwidth on AMD Milan and Genoa.
# [14] Linux KVM, arch/x86/kvm/mmu/mmu.c: unsync shadow pages (mmu_try_to_unsync_pages,
#      kvm_sync_page, kvm_mmu_sync_roots); commit \"KVM: MMU: out of sync shadow core\" (2008).
";

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// The byte range of the value of the dotted `key` in `text`, from the TOML parser's spans
/// (`None` when the file does not set that key, or does not parse).
fn value_span(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    use serde::de::DeserializeSeed as _;
    let path: Vec<&str> = key.split('.').collect();
    FindSpan(&path)
        .deserialize(toml::Deserializer::new(text))
        .ok()
        .flatten()
}

/// Looks for the value at a dotted path, skipping everything else, and returns its span (only
/// values written in the file have one; the tables a header implies do not).
struct FindSpan<'p>(&'p [&'p str]);

impl<'de> serde::de::DeserializeSeed<'de> for FindSpan<'_> {
    type Value = Option<std::ops::Range<usize>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FindSpan<'_> {
    type Value = Option<std::ops::Range<usize>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a TOML table")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        use serde::de::IgnoredAny;
        let mut found = None;
        while let Some(k) = a.next_key::<String>()? {
            match self.0 {
                [first] if *first == k => {
                    found = Some(a.next_value::<toml::Spanned<IgnoredAny>>()?.span());
                }
                [first, rest @ ..] if *first == k => found = a.next_value_seed(FindSpan(rest))?,
                _ => {
                    a.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// The text of a machine-model file, read with a cap: at most [`MAX_CONFIG_BYTES`] (so
/// `/dev/zero` fails at once) and UTF-8. Errors name the file.
pub fn read_machine_file(path: &std::path::Path) -> Result<String, ConfigError> {
    let shown = path.display().to_string();
    let io = |source| ConfigError::Io {
        path: shown.clone(),
        source,
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(io)?, MAX_CONFIG_BYTES + 1),
        &mut bytes,
    )
    .map_err(io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} MiB, the cap on a machine file",
                MAX_CONFIG_BYTES >> 20
            ),
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (byte {} is invalid)",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match MachineConfig::from_toml_str(text, "m.toml") {
            Ok(c) => panic!("accepted {text:?}: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn printed_defaults_parse_back_to_the_defaults() {
        let text = MachineConfig::defaults_toml();
        let parsed = MachineConfig::from_toml_str(&text, "defaults").unwrap();
        assert_eq!(parsed, MachineConfig::default());
        MachineConfig::default().validate().unwrap();
    }

    /// Collects the dotted paths of every leaf of a TOML table (inline geometry tables count as one
    /// leaf each, as in the printed file).
    fn leaves(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(sub) if !sub.contains_key("entries") => leaves(sub, &key, out),
                _ => out.push(key),
            }
        }
    }

    #[test]
    fn printed_defaults_have_every_key_each_with_a_comment() {
        let text = MachineConfig::defaults_toml();
        let printed: toml::Table = toml::from_str(&text).unwrap();
        let full: toml::Table = toml::Table::try_from(MachineConfig::default()).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        leaves(&printed, "", &mut a);
        leaves(&full, "", &mut b);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert!(a.len() > 30, "{a:?}");
        // Every `key = value` line is directly preceded by a comment line.
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains(" = ") && !l.starts_with('#') {
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "no comment above {l:?}"
                );
            }
        }
        // Every value not marked as our assumption cites a source.
        for (i, l) in lines.iter().enumerate() {
            if l.contains(" = ") && !l.starts_with('#') {
                let mut j = i;
                let mut comment = String::new();
                while j > 0 && lines[j - 1].starts_with('#') {
                    j -= 1;
                    comment.insert_str(0, lines[j]);
                }
                assert!(
                    comment.contains("Source")
                        || comment.contains('[')
                        || comment.contains("assumption"),
                    "no source for {l:?}: {comment}"
                );
            }
        }
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = MachineConfig::from_toml_str("[cache.l2]\nsize = \"2MiB\"\n", "p.toml").unwrap();
        let mut want = MachineConfig::default();
        want.cache.l2.size = ByteSize::mib(2);
        assert_eq!(c, want);
        assert_eq!(c.cache.l2.ways, 16);
        assert_eq!(c.cache.l2.sets(), 2048);
        // Plain integers are bytes; an empty file is the defaults.
        let c = MachineConfig::from_toml_str("[cache.llc]\nsize = 4194304\n", "p.toml").unwrap();
        assert_eq!(c.cache.llc.size, ByteSize::mib(4));
        assert_eq!(
            MachineConfig::from_toml_str("", "e.toml").unwrap(),
            MachineConfig::default()
        );
        // A level can be removed.
        let c = MachineConfig::from_toml_str("[cache.l2]\nsize = 0\n", "p.toml").unwrap();
        assert!(!c.cache.l2.is_enabled());
    }

    #[test]
    fn unknown_keys_are_errors_naming_them_with_their_line() {
        let e = err("[cache.l2]\nsize = \"2MiB\"\nwayz = 4\n");
        assert!(
            e.contains("wayz") && e.contains("line 3") && e.contains("m.toml"),
            "{e}"
        );
        let e = err("# comment\n[cahce]\n");
        assert!(e.contains("cahce") && e.contains("line 2"), "{e}");
        let e = err("[core]\nbase_cpi = 1.0\nfrequency = 3\n");
        assert!(e.contains("frequency") && e.contains("line 3"), "{e}");
        let e = err("[tlb]\nstlb = { entries = 1536, ways = 12, latency = 9 }\n");
        assert!(e.contains("latency") && e.contains("line 2"), "{e}");
        let e = err("[exits]\npt_write = \"many\"\n");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn impossible_values_are_errors_naming_key_and_value() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[cache.l2]\nways = 0\n",
                &["cache.l2.ways", "0 ways", "1MiB", "line 2"],
            ),
            (
                "[cache.l2]\nsize = 1000\n",
                &["cache.l2.size", "1000", "line 2"],
            ),
            (
                "[cache.l2]\nsize = \"1.5MiB\"\nways = 10\n",
                &["cache.l2.size", "1536KiB", "1572864", "640 B per set"],
            ),
            (
                "[cache.l1d]\nline = 48\n",
                &["cache.l1d.line", "48", "power of two"],
            ),
            ("[cache.l1d]\nline = 0\n", &["cache.l1d.line", "0 bytes"]),
            (
                "[cache.llc]\nsize = \"1TiB\"\n",
                &["cache.llc.size", "1TiB"],
            ),
            (
                "[cache.llc]\nsize = \"8MiB\"\nways = 512\n",
                &["cache.llc.ways", "512 ways", "256", "line 3"],
            ),
            (
                "[cache.l2]\nlatency = 2\n",
                &["cache.l2.latency", "2 cycles", "cache.l1d.latency = 4"],
            ),
            (
                "[cache]\ndram_latency = 10\n",
                &["cache.dram_latency", "10 cycles"],
            ),
            ("[core]\nbase_cpi = 0.0\n", &["core.base_cpi", "0"]),
            ("[core]\nbase_cpi = -1.5\n", &["core.base_cpi", "-1.5"]),
            ("[core]\nbase_cpi = nan\n", &["core.base_cpi", "NaN"]),
            ("[core]\nbase_cpi = inf\n", &["core.base_cpi", "inf"]),
            (
                "[tlb]\nstlb = { entries = 10, ways = 4 }\n",
                &["tlb.stlb", "10 entries", "line 2"],
            ),
            (
                "[walk_caches]\npd = { entries = 8, ways = 0 }\n",
                &["walk_caches.pd", "ways"],
            ),
            (
                "[exits]\npt_write = 2000000000\n",
                &["exits.pt_write", "2000000000"],
            ),
            (
                "[latency]\nstlb_hit = 99999999999\n",
                &["latency.stlb_hit", "99999999999"],
            ),
        ];
        for (text, needles) in cases {
            let e = err(text);
            for n in *needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn malformed_sizes_are_parse_errors_with_line() {
        let e = err("[cache.l1d]\nsize = \"4GX\"\n");
        assert!(e.contains("4GX") && e.contains("line 2"), "{e}");
        let e = err("[cache.l1d]\nsize = -64\n");
        assert!(e.contains("-64") && e.contains("line 2"), "{e}");
        let e = err("[cache.l1d]\nsize = 1.5\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[cache.l1d\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn no_caches_keeps_data_caches_and_costs() {
        let n = MachineConfig::no_caches();
        let d = MachineConfig::default();
        assert_eq!(n.tlb.stlb, Geometry::OFF);
        assert_eq!(n.walk_caches.nested_tlb, Geometry::OFF);
        assert_eq!(
            (n.cache, n.latency, n.exits, n.core),
            (d.cache, d.latency, d.exits, d.core)
        );
    }

    #[test]
    fn load_reads_files_and_names_missing_ones() {
        let dir = std::env::temp_dir().join(format!("compromis-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.toml");
        std::fs::write(&p, "[latency]\nstlb_hit = 9\n").unwrap();
        assert_eq!(MachineConfig::load(&p).unwrap().latency.stlb_hit, 9);
        let missing = dir.join("missing.toml");
        let e = MachineConfig::load(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn line_col_and_value_spans() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
        let t = "[cache]\ndram_latency = 1\n[cache.l2] # x\n size = 3\n[tlb]\nstlb = { entries = 1, ways = 1 }\n";
        let line = |k| value_span(t, k).map(|s| line_col(t, s.start).0);
        assert_eq!(line("cache.dram_latency"), Some(2));
        assert_eq!(line("cache.l2.size"), Some(4));
        assert_eq!(line("tlb.stlb"), Some(6));
        assert_eq!(line("cache.l2.ways"), None);
        assert_eq!(line("tlb.stlb.ways"), Some(6));
        let dotted = "cache.l2.ways = 3\n\n[core]\nbase_cpi = 2.0\n";
        assert_eq!(
            value_span(dotted, "cache.l2.ways").map(|s| line_col(dotted, s.start).0),
            Some(1)
        );
        assert_eq!(
            value_span(dotted, "core.base_cpi").map(|s| line_col(dotted, s.start).0),
            Some(4)
        );
    }

    /// Each key of the table reads and writes the field its path names in the TOML file.
    #[test]
    fn every_table_key_is_the_field_its_path_names() {
        let d = MachineConfig::default();
        let base: toml::Table = toml::Table::try_from(&d).unwrap();
        let mut paths: Vec<&str> = keys::all().map(|k| k.path).collect();
        for k in keys::all() {
            assert_eq!(k.get(&d), k.default, "{}", k.path);
            let changed = match k.default {
                Value::Geometry(g) => Value::Geometry(Geometry::new(g.entries * 2, g.ways)),
                Value::Cycles(v) => Value::Cycles(v + 1),
                Value::Size(s) => Value::Size(ByteSize(s.0 * 2)),
                Value::Ways(w) => Value::Ways(w + 1),
                Value::Line(l) => Value::Line(l * 2),
                Value::Flag(b) => Value::Flag(!b),
                Value::Cpi(c) => Value::Cpi(c * 2.0),
                Value::Count(n) => Value::Count(n + 1),
                Value::Sync(m) => Value::Sync(match m {
                    compromis_vmem::SyncMode::Oos => compromis_vmem::SyncMode::Eager,
                    compromis_vmem::SyncMode::Eager => compromis_vmem::SyncMode::Oos,
                }),
            };
            let mut m = d.clone();
            k.set(&mut m, changed);
            assert_eq!(k.get(&m), changed, "{}", k.path);
            let t: toml::Table = toml::Table::try_from(&m).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            diff(&base, &t, "", &mut a);
            diff(&t, &base, "", &mut b);
            assert_eq!(a, vec![k.path.to_owned()]);
            assert_eq!(b, a);
        }
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), keys::all().count(), "a path twice");
    }

    /// Dotted paths of the leaves (inline geometry tables as one) of `a` that differ in `b`.
    fn diff(a: &toml::Table, b: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in a {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match (v, b.get(k)) {
                (toml::Value::Table(x), Some(toml::Value::Table(y)))
                    if !x.contains_key("entries") =>
                {
                    diff(x, y, &key, out);
                }
                (x, y) if Some(x) != y => out.push(key),
                _ => {}
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_level() -> impl Strategy<Value = CacheLevel> {
            prop_oneof![
                1 => Just(CacheLevel::OFF),
                4 => (1u64..1024, 1usize..20, 3u32..13, 0u64..10)
                    .prop_map(|(sets, ways, sh, lat)| CacheLevel::new(ByteSize(sets * ways as u64 * (1 << sh)), ways, 1 << sh, lat)),
            ]
        }

        proptest! {
            /// Any valid machine written out as TOML (sizes as strings) reads back identical. Levels stay
            /// below 1024 x 19 x 4 KiB, under the 256 MiB limit.
            #[test]
            fn serialized_configs_read_back(
                (l1d, l2, llc) in (arb_level(), arb_level(), arb_level()),
                lat in prop::array::uniform5(0u64..100),
                exits in prop::array::uniform8(0u64..100_000),
                counts in prop::array::uniform3(1u64..100),
                eager: bool,
                cpi in 0.01f64..10.0,
                tagged: bool,
            ) {
                let mut m = MachineConfig::default();
                // Latencies non-decreasing down the hierarchy.
                let (mut l1d, mut l2, mut llc) = (l1d, l2, llc);
                l2.latency += l1d.latency;
                llc.latency += l2.latency;
                l1d.latency = l1d.latency.min(l2.latency);
                m.cache = CacheConfig { l1d, l2, llc, dram_latency: 1000 };
                m.latency = LatencyConfig { stlb_hit: lat[0], pwc_hit: lat[1], ntlb_hit: lat[2], segment: lat[3], walk_start: lat[4] };
                let shadow_sync = if eager { compromis_vmem::SyncMode::Eager } else { compromis_vmem::SyncMode::Oos };
                m.exits = ExitConfig { pt_write: exits[0], cr3_load: exits[1], page_fault: exits[2], invlpg: exits[3], guest_page_fault: exits[4], zero_4k: exits[5], shadow_sync, unsync: exits[6], resync_entry: exits[7] };
                m.core = CoreConfig { base_cpi: cpi, max_outstanding: counts[0], window: counts[1], page_walkers: counts[2] };
                m.tlb.tagged = tagged;
                prop_assert!(m.validate().is_ok(), "{:?}", m.validate());
                let text = toml::to_string(&m).unwrap();
                prop_assert_eq!(MachineConfig::from_toml_str(&text, "x").unwrap(), m);
            }

            /// Garbage in any value of the default file gives an error or a machine, never a panic.
            #[test]
            fn corrupted_files_never_panic(line in 0usize..200, junk in "[ -~]{0,12}") {
                let text = MachineConfig::defaults_toml();
                let lines: Vec<&str> = text.lines().collect();
                let target = line % lines.len();
                let out: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| match (i == target, l.split_once(" = ")) {
                        (true, Some((k, _))) => format!("{k} = {junk}"),
                        (true, None) => junk.clone(),
                        _ => (*l).to_owned(),
                    })
                    .collect();
                if let Ok(m) = MachineConfig::from_toml_str(&out.join("\n"), "x") {
                    prop_assert!(m.validate().is_ok());
                }
            }
        }
    }
}
