//! The machine model's keys, declared once: per key its TOML path, the field it sets, its
//! default, its kind (which fixes the valid range) and the text (meaning and source) printed
//! above it by `compromis config --defaults`. [`MachineConfig::default`], the per-key checks of
//! [`MachineConfig::validate`] and [`MachineConfig::defaults_toml`] all read [`TABLE`].

use super::{ConfigError, Geometry, MAX_CYCLES, MachineConfig};
use compromis_types::ByteSize;
use std::fmt::Write as _;

/// Largest value of a [`Value::Count`].
pub const MAX_COUNT: u64 = 4096;

/// A key's value, tagged with its kind. The kind fixes the valid range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A TLB-like structure `{ entries, ways }`: valid when the set-associative array accepts it.
    Geometry(Geometry),
    /// A latency or cost in cycles: at most [`MAX_CYCLES`].
    Cycles(u64),
    /// A cache capacity (checked with its level: ways x sets x line).
    Size(ByteSize),
    /// A cache associativity (checked with its level).
    Ways(usize),
    /// A cache line in bytes: a power of two from 8 to 4096.
    Line(u64),
    /// On or off.
    Flag(bool),
    /// Cycles per instruction: in (0, 1000].
    Cpi(f64),
    /// A number of hardware resources (walkers, fill buffers, window entries): 1 to 4096.
    Count(u64),
    /// A shadow-paging sync mode: `"oos"` or `"eager"`.
    Sync(compromis_vmem::SyncMode),
}

impl Value {
    /// Checks the value alone (relations between keys are checked by
    /// [`MachineConfig::validate`]); `path` names it in errors.
    pub fn check(self, path: &str) -> Result<(), ConfigError> {
        let bad = |reason: String| {
            Err(ConfigError::Value {
                key: path.to_owned(),
                reason,
            })
        };
        match self {
            Value::Geometry(g) => {
                g.validate(path)?;
            }
            Value::Cycles(v) if v > MAX_CYCLES => {
                return bad(format!("{v} cycles is more than the {MAX_CYCLES} accepted"));
            }
            Value::Line(l) if !l.is_power_of_two() || !(8..=4096).contains(&l) => {
                return bad(format!("{l} bytes is not a power of two from 8 to 4096"));
            }
            Value::Cpi(c) if !(c.is_finite() && c > 0.0 && c <= 1000.0) => {
                return bad(format!(
                    "{c} is not a number of cycles per instruction in (0, 1000]"
                ));
            }
            Value::Count(n) if !(1..=MAX_COUNT).contains(&n) => {
                return bad(format!("{n} is not a count from 1 to {MAX_COUNT}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// The value as written in a TOML file.
    pub(crate) fn toml(self) -> String {
        match self {
            Value::Geometry(g) => format!("{{ entries = {}, ways = {} }}", g.entries, g.ways),
            Value::Cycles(v) | Value::Line(v) => v.to_string(),
            Value::Ways(v) => v.to_string(),
            Value::Size(s) => format!("\"{s}\""),
            Value::Flag(b) => b.to_string(),
            Value::Cpi(c) => format!("{c:?}"),
            Value::Count(n) => n.to_string(),
            Value::Sync(m) => format!("\"{m}\""),
        }
    }
}

/// One key of the machine model.
#[derive(Clone, Copy)]
pub struct Key {
    /// Dotted TOML path (`cache.l2.size`).
    pub path: &'static str,
    /// The default value.
    pub default: Value,
    /// Meaning and source, printed as comment lines above the key.
    pub doc: &'static str,
    get: fn(&MachineConfig) -> Value,
    set: fn(&mut MachineConfig, Value),
}

impl Key {
    /// The key's value in `m`.
    pub fn get(&self, m: &MachineConfig) -> Value {
        (self.get)(m)
    }

    /// Sets the key in `m`; a value of another kind is ignored.
    pub fn set(&self, m: &mut MachineConfig, v: Value) {
        (self.set)(m, v);
    }
}

/// One entry of the table: a TOML table header with its introduction, or a key.
#[derive(Clone, Copy)]
pub enum Entry {
    /// `[path]`, followed by `doc` as comment lines (none when empty).
    Section {
        /// Dotted path of the table.
        path: &'static str,
        /// Introduction.
        doc: &'static str,
    },
    /// A key of the section above.
    Key(Key),
}

/// A key entry: `key!(Kind, a.b.c, default, doc)`.
macro_rules! key {
    ($kind:ident, $first:ident $(. $rest:ident)*, $default:expr, $doc:expr $(,)?) => {
        Entry::Key(Key {
            path: concat!(stringify!($first) $(, ".", stringify!($rest))*),
            default: Value::$kind($default),
            doc: $doc,
            get: |m| Value::$kind(m.$first $(.$rest)*),
            set: |m, v| {
                if let Value::$kind(x) = v {
                    m.$first $(.$rest)* = x;
                }
            },
        })
    };
}

/// The four keys of a cache level, with one source for all.
macro_rules! cache_level {
    ($level:ident, $what:expr, $src:expr, $size:expr, $ways:expr, $line:expr, $latency:expr) => {
        [
            Entry::Section {
                path: concat!("cache.", stringify!($level)),
                doc: $what,
            },
            key!(
                Size,
                cache.$level.size,
                $size,
                concat!(
                    "Capacity (\"32KiB\", \"1MiB\" or bytes; \"0\" removes the level). ",
                    $src
                )
            ),
            key!(
                Ways,
                cache.$level.ways,
                $ways,
                concat!("Associativity. ", $src)
            ),
            key!(
                Line,
                cache.$level.line,
                $line,
                concat!("Line size in bytes (power of two). ", $src)
            ),
            key!(
                Cycles,
                cache.$level.latency,
                $latency,
                concat!(
                    "Load-to-use latency in cycles of a hit here (whole latency). ",
                    $src
                )
            ),
        ]
    };
}

macro_rules! tlb_src {
    () => {
        "Source: Intel optimization manual [1], Skylake TLB table; AnandTech [2]."
    };
}

const TLB: [Entry; 9] = [
    Entry::Section {
        path: "tlb",
        doc: "Entries and ways of each TLB (entries = 0 removes it; ways = entries: fully associative).",
    },
    key!(
        Geometry,
        tlb.l1d_4k,
        Geometry::new(64, 4),
        concat!("L1 data TLB, 4 KiB pages. ", tlb_src!())
    ),
    key!(
        Geometry,
        tlb.l1d_2m,
        Geometry::new(32, 4),
        concat!("L1 data TLB, 2 MiB pages. ", tlb_src!())
    ),
    key!(
        Geometry,
        tlb.l1d_1g,
        Geometry::new(4, 4),
        concat!("L1 data TLB, 1 GiB pages. ", tlb_src!())
    ),
    key!(
        Geometry,
        tlb.l1i_4k,
        Geometry::new(128, 8),
        concat!("L1 instruction TLB, 4 KiB pages. ", tlb_src!())
    ),
    key!(
        Geometry,
        tlb.l1i_2m,
        Geometry::new(8, 8),
        concat!(
            "L1 instruction TLB, 2 MiB pages (8 per thread). ",
            tlb_src!()
        )
    ),
    key!(
        Geometry,
        tlb.stlb,
        Geometry::new(1536, 12),
        concat!("Second-level TLB, 4 KiB and 2 MiB pages. ", tlb_src!())
    ),
    key!(
        Geometry,
        tlb.stlb_1g,
        Geometry::new(16, 4),
        concat!("Second-level TLB, 1 GiB pages. ", tlb_src!())
    ),
    key!(
        Flag,
        tlb.tagged,
        true,
        "Tagged TLBs (PCID/VPID): a CR3 load does not flush. false = flush TLBs and walk caches on\n\
         every CR3 load. Source: Intel SDM vol. 3, 4.10.1 (PCIDs); default true as on current Linux."
    ),
];

const WALK_CACHES: [Entry; 8] = [
    Entry::Section {
        path: "walk_caches",
        doc: "Paging-structure caches (Intel SDM vol. 3, 4.10.3). Intel says a processor may or may not\n\
              implement them and publishes no sizes: every value below is our assumption.",
    },
    key!(
        Geometry,
        walk_caches.pml4,
        Geometry::new(2, 2),
        "PML4E (and PML5E) cache, keyed by VA bits 47:39. Our assumption."
    ),
    key!(
        Geometry,
        walk_caches.pdpt,
        Geometry::new(4, 4),
        "PDPTE cache, keyed by VA bits 47:30. Our assumption."
    ),
    key!(
        Geometry,
        walk_caches.pd,
        Geometry::new(32, 4),
        "PDE cache, keyed by VA bits 47:21. Our assumption."
    ),
    key!(
        Geometry,
        walk_caches.nested_tlb,
        Geometry::new(32, 4),
        "Nested TLB (gPA page -> hPA page) used during EPT walks (Bhargava et al., ASPLOS 2008).\n\
         Size: our assumption."
    ),
    key!(
        Geometry,
        walk_caches.host_pml4,
        Geometry::new(2, 2),
        "Host (EPT) PML4E cache. Our assumption (mirrors the guest one)."
    ),
    key!(
        Geometry,
        walk_caches.host_pdpt,
        Geometry::new(4, 4),
        "Host (EPT) PDPTE cache. Our assumption."
    ),
    key!(
        Geometry,
        walk_caches.host_pd,
        Geometry::new(32, 4),
        "Host (EPT) PDE cache. Our assumption."
    ),
];

const CACHE: [Entry; 2] = [
    Entry::Section {
        path: "cache",
        doc: "Data caches: physically indexed and tagged, non-inclusive, LRU, write-allocate; a miss fills the\n\
              line into every level above the one that had it. Page-walk references go through them too.",
    },
    key!(
        Cycles,
        cache.dram_latency,
        200,
        "Load-to-use latency in cycles of an access served by DRAM. Source: AnandTech [3], LMBench\n\
         random loads on Skylake-SP with DDR4-2666: 89-91 ns, about 190-230 cycles at 2.1-2.5 GHz."
    ),
];

const L1D: [Entry; 5] = cache_level!(
    l1d,
    "L1 data cache.",
    "Source: Intel optimization manual [1] (Skylake: 32 KB, 8 ways, 64 B, 4 cycles fastest); AnandTech [2].",
    ByteSize::kib(32),
    8,
    64,
    4
);

const L2: [Entry; 5] = cache_level!(
    l2,
    "Private L2 cache.",
    "Source: AnandTech [2] (Skylake-SP: 1 MB, 16 ways, 11-13 cycles), [3] (LMBench on Skylake-SP: 14-22 cycles), [11] (Xeon 8280: 14 cycles).",
    ByteSize::mib(1),
    16,
    64,
    14
);

const LLC: [Entry; 5] = cache_level!(
    llc,
    "Last-level cache: one core's share (2 MiB slice per core).",
    "Source: Intel optimization manual [1] (Skylake client L3: up to 2 MB per core, up to 16 ways, 64 B, 44 cycles).",
    ByteSize::mib(2),
    16,
    64,
    44
);

const LATENCY: [Entry; 6] = [
    Entry::Section {
        path: "latency",
        doc: "",
    },
    key!(
        Cycles,
        latency.stlb_hit,
        8,
        "Cycles added by an L1 TLB miss that hits the second-level TLB. Intel does not publish it;\n\
         derived from [4]: a load hitting the L2 TLB takes about 12 cycles on Haswell versus 4 for an\n\
         L1 TLB hit, so about 8 cycles more."
    ),
    key!(
        Cycles,
        latency.pwc_hit,
        2,
        "Cycles per guest page-walk-cache hit (one lookup that skips upper levels). Our assumption."
    ),
    key!(
        Cycles,
        latency.ntlb_hit,
        2,
        "Cycles per nested-TLB or host page-walk-cache hit. Our assumption."
    ),
    key!(
        Cycles,
        latency.segment,
        1,
        "Cycles per gPA translated by a segment register (Compromis: one compare and one add,\n\
         no memory reference; paper: VEE 2021). Our assumption."
    ),
    key!(
        Cycles,
        latency.walk_start,
        20,
        "Fixed cycles of every completed page walk on top of its references: the page-miss handler\n\
         starting after the STLB miss, and the fill of the STLB and L1 TLB with the result. Intel and\n\
         AMD publish no figure; our assumption (a few pipeline stages at each end of the walk)."
    ),
];

const EXITS: [Entry; 10] = [
    Entry::Section {
        path: "exits",
        doc: "Cycles per VM exit by cause: hardware round trip plus the hypervisor's handler. A bare exit and\n\
              re-entry costs hundreds to thousands of cycles [5][6]; about 1,350 cycles were measured around\n\
              VMRUN in KVM on a recent AMD core [7]. Handler costs on top are our assumption.",
    },
    key!(
        Cycles,
        exits.pt_write,
        4000,
        "Shadow paging: trapped guest page-table write (decode and emulate the write, update the\n\
         shadow entry), well above a bare exit [8][9]. Value: our assumption."
    ),
    key!(
        Cycles,
        exits.cr3_load,
        2000,
        "Shadow paging: guest CR3 load (look up or build the shadow root). Our assumption."
    ),
    key!(
        Cycles,
        exits.page_fault,
        1500,
        "Shadow paging: guest page fault intercepted and reflected to the guest [8]. Our assumption."
    ),
    key!(
        Cycles,
        exits.invlpg,
        1500,
        "Shadow paging: guest INVLPG (drop the shadow entry). Our assumption."
    ),
    key!(
        Cycles,
        exits.guest_page_fault,
        2500,
        "The guest kernel's own handling of a demand-paging fault, zeroing excluded (see zero_4k);\n\
         paid by every scheme (native included) and by the perfect-TLB baseline. Source: [10], a\n\
         minor anonymous 4 KiB fault measured at 1,842 (min) / 3,241 (median) cycles on an\n\
         11th-generation Core, zeroing included: 3,241 - 750 (zero_4k), rounded."
    ),
    key!(
        Cycles,
        exits.zero_4k,
        750,
        "The guest kernel zeroing 4 KiB of a newly faulted page; a 2 MiB fault zeroes 512 x 4 KiB.\n\
         Source: [13], clear_page (rep stos) at 13.7 GB/s in 4 KiB chunks on AMD Milan, and 2 MiB\n\
         THP faults zeroed at 11.8 GB/s on AMD Genoa: 4,096 B in about 300 ns, 750 cycles at 2.5 GHz."
    ),
    key!(
        Sync,
        exits.shadow_sync,
        compromis_vmem::SyncMode::Oos,
        "How shadow paging keeps its tables in sync: \"oos\" (out of sync: last-level guest tables\n\
         writable while unsync, reconciled at INVLPG, CR3 load and hidden faults; KVM unsync shadow\n\
         pages since 2008 [14], Xen 3.3 Shadow 3 out-of-sync L1s [9]) or \"eager\" (every guest\n\
         page-table write traps and is synced at once). `compromis sim --shadow-sync` overrides it."
    ),
    key!(
        Cycles,
        exits.unsync,
        1500,
        "Shadow paging, out of sync: the first guest write to an in-sync (write-protected) last-level\n\
         table, a shadow page fault the hypervisor handles without emulating (it unprotects the table,\n\
         marks it unsync, the guest retries the write) [14]. Costed like a reflected page fault: our\n\
         assumption."
    ),
    key!(
        Cycles,
        exits.resync_entry,
        100,
        "Shadow paging, out of sync: per guest entry reconciled at INVLPG or CR3 load (read the\n\
         guest entry, compare, update or drop the shadow entry; KVM sync_spte [14]). Our assumption."
    ),
];

const CORE: [Entry; 5] = [
    Entry::Section {
        path: "core",
        doc: "",
    },
    key!(
        Cpi,
        core.base_cpi,
        0.5,
        "Cycles per instruction with a perfect memory system; data-access and translation latencies\n\
         are added on top. Our assumption (a 4-wide out-of-order core at IPC 2 on non-memory work)."
    ),
    key!(
        Count,
        core.max_outstanding,
        10,
        "Memory accesses in flight at once (L1D fill buffers / MSHRs): independent accesses overlap up\n\
         to this many; a dependent access (pointer chasing) waits for the load it depends on, and the\n\
         references of one walk are always a chain. 1 = the serial model (every latency added).\n\
         Source: [1], 10 L1D fill buffers from Sandy Bridge to Skylake (12 on Skylake-SP per [2])."
    ),
    key!(
        Count,
        core.window,
        224,
        "Instruction window: an access cannot start before every access at least this many\n\
         instructions older has completed (the reorder buffer is full). Source: [1], Skylake\n\
         224-entry reorder buffer."
    ),
    key!(
        Count,
        core.page_walkers,
        2,
        "Page walks in flight at once (page-miss handlers). Source: [1], two page walkers since\n\
         Broadwell (Skylake included)."
    ),
];

/// Every entry, in file order.
pub static TABLE: [&[Entry]; 9] = [
    &TLB,
    &WALK_CACHES,
    &CACHE,
    &L1D,
    &L2,
    &LLC,
    &LATENCY,
    &EXITS,
    &CORE,
];

/// Every key, in file order.
pub fn all() -> impl Iterator<Item = &'static Key> {
    TABLE.iter().flat_map(|s| s.iter()).filter_map(|e| match e {
        Entry::Key(k) => Some(k),
        Entry::Section { .. } => None,
    })
}

/// The machine with every key at its default.
pub(super) fn defaults() -> MachineConfig {
    let mut m = MachineConfig::BLANK;
    for k in all() {
        k.set(&mut m, k.default);
    }
    m
}

/// Checks every key's value alone, in file order.
pub(super) fn check(m: &MachineConfig) -> Result<(), ConfigError> {
    all().try_for_each(|k| k.get(m).check(k.path))
}

/// The defaults file after its header: each section, each key with its text as comments.
pub(super) fn write_defaults(o: &mut String) {
    let mut section = "";
    for e in TABLE.iter().flat_map(|s| s.iter()) {
        match e {
            Entry::Section { path, doc } => {
                section = path;
                let _ = writeln!(o, "\n[{path}]");
                comment(o, doc);
            }
            Entry::Key(k) => {
                comment(o, k.doc);
                let name = k
                    .path
                    .strip_prefix(section)
                    .and_then(|n| n.strip_prefix('.'))
                    .unwrap_or(k.path);
                let _ = writeln!(o, "{name} = {}", k.default.toml());
            }
        }
    }
}

fn comment(o: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(o, "# {line}");
    }
}
