//! A minimal VMM on `/dev/kvm` that makes the hypervisor half of Compromis (VEE 2021) real and
//! measures what the simulator predicts (`compromis kvm`).
//!
//! For each host backing (4 KiB pages, THP, hugetlbfs 2 MiB or 1 GiB pages) the VM's RAM is
//! first requested from the Compromis memory manager (`compromis_hostmem`, one extent, no
//! fallback: the host's decision), then really allocated, populated, and its host-physical frames
//! read from `/proc/self/pagemap`: the contiguous extents found say whether a Compromis MMU could
//! map this VM with one BASE / LIMIT / OFFSET register set. A guest generated at run time (no
//! cross toolchain: [`code`] assembles it with iced-x86) is entered directly in 64-bit long mode
//! with VMM-built page tables ([`paging`]) and runs gups or pointer-chase over the same address
//! sequence as `compromis sim` ([`sequence`]); the same machine code runs natively in this
//! process over the same footprint ([`native`]). [`run`] returns every figure as data; printers
//! are in [`output`].
//!
//! Layers: [`pagemap`] (frames -> extents), [`hugepages`] (pool reservations restored on drop and
//! on Ctrl-C), [`memory`] (mappings), [`vm`] (KVM, long mode, watchdog, exits), [`predict`] (the
//! simulator's figures).

pub mod code;
pub mod hugepages;
pub mod memory;
pub mod native;
pub mod output;
pub mod pagemap;
pub mod paging;
pub mod predict;
pub mod sequence;
pub mod vm;

use crate::code::Params;
use crate::memory::{HostBacking, MemoryError, Ram};
use crate::paging::PageTables;
use crate::vm::{Vm, VmError, layout};
use compromis_hostmem::{
    Extent, Fallback, GuestLayout, HostMemory, MMIO_HOLE_START, Policy, Segment, VmId, segments_for,
};
use compromis_types::{ByteSize, Gpa, PageSize};
use compromis_workload::WorkloadKind;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use hugepages::restore_all as restore_hugepages;
pub use vm::open_kvm;

/// The measured workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Random read-modify-write of 8-byte words (HPCC RandomAccess).
    Gups,
    /// Dependent loads over a random cyclic permutation of 64-byte nodes.
    PointerChase,
}

impl Workload {
    /// Both, in output order.
    pub const ALL: [Workload; 2] = [Workload::Gups, Workload::PointerChase];

    /// The name used by `compromis sim`.
    pub fn name(self) -> &'static str {
        self.kind().name()
    }

    /// The simulator's workload.
    pub fn kind(self) -> WorkloadKind {
        match self {
            Workload::Gups => WorkloadKind::Gups,
            Workload::PointerChase => WorkloadKind::PointerChase,
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown workload '{s}': valid values are gups, pointer-chase"))
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of a run.
#[derive(Debug, Error)]
pub enum VmmError {
    /// KVM or the guest failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Host memory could not be set up.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The workload could not be generated.
    #[error(transparent)]
    Workload(#[from] compromis_workload::WorkloadError),
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The guest's checksum differs from the native run's.
    #[error(
        "checksum mismatch for {workload} (guest {guest_page} pages, {backing} backing): guest {guest:#x}, native {native:#x}"
    )]
    Checksum {
        /// Workload.
        workload: Workload,
        /// Guest page size name.
        guest_page: &'static str,
        /// HostBacking.
        backing: HostBacking,
        /// Guest's checksum.
        guest: u64,
        /// Native checksum.
        native: u64,
    },
}

impl VmmError {
    /// Whether the error means `/dev/kvm` is unusable (the CLI exits 2 with the message).
    pub fn is_no_kvm(&self) -> bool {
        matches!(self, VmmError::Vm(VmError::NoKvm(_)))
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Config {
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Guest page sizes (4 KiB, 2 MiB).
    pub guest_pages: Vec<PageSize>,
    /// Host backings of guest RAM.
    pub backings: Vec<HostBacking>,
    /// Data footprint (as `compromis sim --footprint`).
    pub footprint: ByteSize,
    /// Updates (gups) or nodes visited (pointer-chase) per run.
    pub iterations: u64,
    /// Seed (as `compromis sim --seed`).
    pub seed: u64,
    /// Watchdog budget of one guest run.
    pub budget: Duration,
    /// Also run the simulator on every configuration.
    pub predict: bool,
    /// The machine preset the predictions simulate.
    pub machine: compromis_mmu::config::presets::Machine,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workloads: Workload::ALL.to_vec(),
            guest_pages: vec![PageSize::Size4K, PageSize::Size2M],
            backings: vec![
                HostBacking::Page4K,
                HostBacking::Huge2M,
                HostBacking::Huge1G,
            ],
            footprint: ByteSize::mib(256),
            iterations: 100_000,
            seed: 42,
            budget: Duration::from_secs(20),
            predict: true,
            machine: compromis_mmu::config::presets::Machine::default_machine(),
        }
    }
}

impl Config {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), VmmError> {
        let bad = |m: String| Err(VmmError::Config(m));
        if self.workloads.is_empty() || self.guest_pages.is_empty() || self.backings.is_empty() {
            return bad("--workloads, --guest-pages and --backing need at least one value".into());
        }
        if let Some(p) = self.guest_pages.iter().find(|p| **p == PageSize::Size1G) {
            return bad(format!(
                "guest pages of {} are not offered: use 4k or 2m",
                p.name()
            ));
        }
        if self.iterations == 0 {
            return bad("--iterations must be at least 1".into());
        }
        if self.footprint.bytes() < 1 << 20 {
            return bad("--footprint must be at least 1 MiB".into());
        }
        if self.footprint.bytes() > 3 << 30 {
            return bad(format!(
                "--footprint {} is too large: at most 3GiB, so guest RAM stays below the MMIO hole at 3.75 GiB",
                self.footprint
            ));
        }
        Ok(())
    }
}

/// A workload's data, prepared once and laid out identically in the guest and natively.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Which workload.
    pub workload: Workload,
    /// Iterations.
    pub iterations: u64,
    /// gups: the byte offset of each update.
    offsets: Vec<u64>,
    /// pointer-chase: successor of each node, and the first node.
    succ: Vec<u32>,
    first: u32,
    /// Bytes of the table or node pool.
    data_len: u64,
}

const TWO_MIB: u64 = 2 << 20;

impl Prepared {
    /// Generates the sequence of `w` (same seed and footprint as `compromis sim`).
    pub fn new(
        w: Workload,
        footprint: ByteSize,
        iterations: u64,
        seed: u64,
    ) -> Result<Self, VmmError> {
        Ok(match w {
            Workload::Gups => {
                let (data_len, offsets) = sequence::gups(footprint, iterations, seed)?;
                Prepared {
                    workload: w,
                    iterations,
                    offsets,
                    succ: Vec::new(),
                    first: 0,
                    data_len,
                }
            }
            Workload::PointerChase => {
                let (data_len, first, succ) = sequence::chase(footprint, seed)?;
                Prepared {
                    workload: w,
                    iterations,
                    offsets: Vec::new(),
                    succ,
                    first,
                    data_len,
                }
            }
        })
    }

    /// Bytes of the index array in front of the table (gups), 2 MiB aligned.
    fn index_len(&self) -> u64 {
        (self.offsets.len() as u64 * 8).div_ceil(TWO_MIB) * TWO_MIB
    }

    /// Bytes of the table or node pool, 2 MiB aligned.
    fn data_span(&self) -> u64 {
        self.data_len.div_ceil(TWO_MIB) * TWO_MIB
    }

    /// Offset of the time stamps in the image.
    fn stamps_off(&self) -> u64 {
        self.index_len() + self.data_span()
    }

    /// Number of time stamps.
    fn stamps(&self) -> u64 {
        self.iterations / code::CHUNK + 1
    }

    /// Bytes of the whole image (index array + table, or node pool; then the time stamps).
    pub fn image_len(&self) -> u64 {
        self.stamps_off() + (self.stamps() * 8).div_ceil(TWO_MIB) * TWO_MIB
    }

    /// Writes the image at `base` of `mem` (fresh, zeroed memory) and returns the kernel's
    /// warm-up and measured parameters, with addresses as `addr_base` + offsets (guest-virtual
    /// in the VM, host virtual natively).
    fn write(
        &self,
        mem: &GuestMemoryMmap,
        base: u64,
        addr_base: u64,
    ) -> Result<(Params, Params), VmmError> {
        let p = self.write_data(mem, base, addr_base)?;
        let p = Params {
            chunks: self.iterations / code::CHUNK,
            stamps: addr_base + self.stamps_off(),
            ..p
        };
        let warm = Params {
            data: addr_base,
            chunks: 0,
            warm_len: self.image_len(),
            ..p
        };
        Ok((warm, p))
    }

    fn write_data(
        &self,
        mem: &GuestMemoryMmap,
        base: u64,
        addr_base: u64,
    ) -> Result<Params, VmmError> {
        let err = |e: vm_memory::GuestMemoryError| VmmError::Vm(VmError::Memory(e.to_string()));
        match self.workload {
            Workload::Gups => {
                for (i, chunk) in (0u64..).zip(self.offsets.chunks(1 << 16)) {
                    let bytes: Vec<u8> = chunk.iter().flat_map(|o| o.to_le_bytes()).collect();
                    mem.write_slice(&bytes, GuestAddress(base + i * (8 << 16)))
                        .map_err(err)?;
                }
                Ok(Params {
                    data: addr_base + self.index_len(),
                    aux: addr_base,
                    ..Params::default()
                })
            }
            Workload::PointerChase => {
                let per_chunk = 1 << 14;
                for (c, chunk) in (0u64..).zip(self.succ.chunks(per_chunk)) {
                    let mut bytes = vec![0u8; chunk.len() * 64];
                    for (j, (&s, node)) in chunk.iter().zip(bytes.chunks_mut(64)).enumerate() {
                        let index = c * per_chunk as u64 + j as u64;
                        node[..8].copy_from_slice(&(u64::from(s) * 64).to_le_bytes());
                        node[8..16].copy_from_slice(&(index + 1).to_le_bytes());
                    }
                    mem.write_slice(&bytes, GuestAddress(base + c * per_chunk as u64 * 64))
                        .map_err(err)?;
                }
                Ok(Params {
                    data: addr_base,
                    aux: u64::from(self.first) * 64,
                    ..Params::default()
                })
            }
        }
    }

    /// The checksum the kernel must produce, computed in software.
    pub fn expected_checksum(&self) -> u64 {
        match self.workload {
            Workload::Gups => {
                let mut table: HashMap<u64, u64> = HashMap::new();
                let mut sum = 0u64;
                for &o in &self.offsets {
                    let w = table.entry(o).or_insert(0);
                    *w ^= o;
                    sum = sum.wrapping_add(*w);
                }
                sum
            }
            Workload::PointerChase => {
                let mut sum = 0u64;
                let mut n = self.first;
                for _ in 0..self.iterations {
                    sum = sum.wrapping_add(u64::from(n) + 1);
                    n = self.succ[n as usize];
                }
                sum.wrapping_add(u64::from(n) * 64)
            }
        }
    }
}

/// One timed execution of a kernel.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Timing {
    /// Nanoseconds per iteration: the median over chunks of [`code::CHUNK`] iterations (a chunk
    /// during which the shared host CPU was taken away does not move it).
    pub ns_per_access: f64,
    /// Nanoseconds per iteration over the whole loop (mean, preemptions included).
    pub mean_ns_per_access: f64,
    /// TSC ticks of the whole loop.
    pub tsc_ticks: u64,
    /// Host wall clock around the measured call (native), or from the guest's warm-up exit to its
    /// done exit (VM), ns.
    pub wall_ns: u64,
    /// The loop's TSC-derived duration over that wall-clock duration (close to, and at most, 1
    /// when the TSC frequency is right).
    pub tsc_over_wall: f64,
    /// The kernel's checksum.
    pub checksum: u64,
}

#[allow(clippy::cast_precision_loss)] // tick and ns counts stay far below 2^53
fn timing(stamps: &[u64], checksum: u64, wall: Duration, tsc_khz: f64) -> Timing {
    let mut deltas: Vec<u64> = stamps.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    deltas.sort_unstable();
    let median = deltas.get(deltas.len() / 2).copied().unwrap_or(0);
    let ticks = match (stamps.first(), stamps.last()) {
        (Some(a), Some(b)) => b.wrapping_sub(*a),
        _ => 0,
    };
    let ns = |t: u64| t as f64 / tsc_khz * 1e6;
    let iterations = (deltas.len() as u64 * code::CHUNK).max(1) as f64;
    let wall_ns = u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX);
    Timing {
        ns_per_access: ns(median) / code::CHUNK as f64,
        mean_ns_per_access: ns(ticks) / iterations,
        tsc_ticks: ticks,
        wall_ns,
        tsc_over_wall: if wall_ns > 0 {
            ns(ticks) / wall_ns as f64
        } else {
            0.0
        },
        checksum,
    }
}

/// Reads the `n` time stamps at `at` of `mem`.
fn read_stamps(mem: &GuestMemoryMmap, at: u64, n: u64) -> Result<Vec<u64>, VmmError> {
    let mut bytes = vec![0u8; usize::try_from(n * 8).unwrap_or(0)];
    mem.read_slice(&mut bytes, GuestAddress(at))
        .map_err(|e| VmError::Memory(e.to_string()))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// What the host gave the VM: extents found in pagemap and the register sets they allow.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// The backing.
    pub backing: HostBacking,
    /// Guest RAM bytes.
    pub ram: u64,
    /// The memory manager's decision for this VM (model of this host, before allocating).
    pub model: String,
    /// Physically contiguous extents found, in guest-physical order.
    pub extents: usize,
    /// Sizes of the extents, largest first, grouped: `(bytes, count)`.
    pub extent_sizes: Vec<(u64, usize)>,
    /// Whether the RAM is one host-physical segment.
    pub one_segment: bool,
    /// The register sets a Compromis MMU would load (empty when it cannot).
    pub registers: Vec<Segment>,
    /// Why no single register set fits (or empty).
    pub reason: String,
}

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Workload.
    pub workload: Workload,
    /// Guest page size.
    pub guest_page: PageSize,
    /// Host backing of guest RAM.
    pub backing: HostBacking,
    /// The native baseline's backing (4 KiB for 4 KiB guest pages, THP for 2 MiB).
    pub native_backing: HostBacking,
    /// Native timing.
    pub native: Timing,
    /// In the VM.
    pub vm: Timing,
    /// VM ns per access / native ns per access.
    pub slowdown: f64,
    /// The simulator's prediction (None when not run or it failed).
    pub predicted: Option<predict::Prediction>,
}

/// Everything one `compromis kvm` run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// CPU model name.
    pub cpu: String,
    /// Whether this machine is itself a VM (the `hypervisor` CPUID flag).
    pub nested: bool,
    /// TSC frequency used for conversions (kHz).
    pub tsc_khz: u32,
    /// Footprint bytes.
    pub footprint: u64,
    /// Iterations per run.
    pub iterations: u64,
    /// Seed.
    pub seed: u64,
    /// The machine model of the predictions.
    pub machine_model: String,
    /// Whether `/dev/kvm` is PVM's (software virtualization).
    pub pvm: bool,
    /// The instruction-rate check.
    pub calibration: Calibration,
    /// Per backing: the host memory the VM got.
    pub hosts: Vec<HostReport>,
    /// Measured rows.
    pub rows: Vec<Row>,
    /// Notes: skipped backings and why, prediction failures.
    pub notes: Vec<String>,
}

fn cpu_info() -> (String, bool) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let nested = field("flags").is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor"));
    (
        field("model name").unwrap_or_else(|| "unknown".into()),
        nested,
    )
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(16 << 30, |kib| kib * 1024)
}

/// Groups extent sizes, largest first.
pub fn group_sizes(extents: &[Extent]) -> Vec<(u64, usize)> {
    let mut m: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
    for e in extents {
        *m.entry(e.len).or_default() += 1;
    }
    m.into_iter().rev().collect()
}

/// The register sets of a VM whose RAM (`layout`) lies in `extents`, or why one set cannot do.
pub fn registers_for(layout: &GuestLayout, extents: &[Extent]) -> (Vec<Segment>, String) {
    let segs = segments_for(layout, extents);
    if extents.len() == 1 {
        (segs, String::new())
    } else {
        let largest = extents.iter().map(|e| e.len).max().unwrap_or(0);
        (
            Vec::new(),
            format!(
                "RAM is in {} host-physical extents (largest {}): one BASE/LIMIT/OFFSET set cannot map it; a Compromis MMU would need a {}-entry segment table or the EPT fallback",
                extents.len(),
                ByteSize(largest),
                segs.len()
            ),
        )
    }
}

/// Guest RAM for a workload image with `backing`: low memory, the tables (sized for 4 KiB guest
/// pages, the larger case), the image; rounded up to the backing's page.
fn guest_ram(image: u64, backing: HostBacking) -> u64 {
    let tables = paging::tables_bytes(image + (64 << 20), PageSize::Size4K);
    let need = layout::TABLES + tables + TWO_MIB + image;
    // At least 2 MiB granularity, so 2 MiB guest pages map all of it.
    let page = backing.page().bytes().max(TWO_MIB);
    need.div_ceil(page) * page
}

/// Where the workload image starts in a guest of `ram` bytes: after the page tables of the
/// larger (4 KiB) mapping, 2 MiB aligned, so every run over the same RAM uses the same layout.
fn data_base(ram: u64) -> u64 {
    let end = layout::TABLES + paging::tables_bytes(ram, PageSize::Size4K);
    end.div_ceil(TWO_MIB) * TWO_MIB
}

/// RunProgress observer (the CLI prints these lines on stderr).
pub trait RunProgress {
    /// A step starts or a note is made.
    fn note(&self, line: &str);
}

impl<F: Fn(&str)> RunProgress for F {
    fn note(&self, line: &str) {
        self(line);
    }
}

/// How fast the vCPU runs plain instructions, against this process: the register-only loop
/// ([`code::register_loop`]) natively and in a VM.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Calibration {
    /// Native ns per iteration (median over chunks).
    pub native_ns: f64,
    /// In-VM ns per iteration (median over chunks).
    pub vm_ns: f64,
    /// `vm_ns / native_ns`: about 1 when the guest runs on the hardware; far above when the
    /// hypervisor emulates or single-steps the guest.
    pub ratio: f64,
}

/// Above this calibration ratio the guest is not running on the hardware.
pub const EMULATION_RATIO: f64 = 5.0;

/// Runs the register-only loop natively and in a small VM.
pub fn calibrate(
    kvm: &kvm_ioctls::Kvm,
    budget: Duration,
    tsc_khz: f64,
) -> Result<Calibration, VmmError> {
    let chunks = 20;
    let code = code::register_loop().map_err(|e| VmError::Asm(e.to_string()))?;
    let ram = Ram::new(HostBacking::Page4K, TWO_MIB)?;
    let p = Params {
        data: ram.host_ptr() as u64,
        chunks,
        stamps: ram.host_ptr() as u64,
        ..Params::default()
    };
    let exe = native::Executable::new(&code).map_err(|e| {
        VmmError::Memory(MemoryError::Os {
            what: "mmap of code",
            source: e,
        })
    })?;
    // SAFETY: the register loop touches only `stamps` (chunks + 1 words inside `ram`, alive for
    // the call) and no other memory (warm_len is 0).
    let (out, wall) = unsafe { exe.call(p) };
    let native = timing(
        &read_stamps(ram.mem(), 0, chunks + 1)?,
        out.checksum,
        wall,
        tsc_khz,
    );
    let len = 8 << 20;
    let vram = Ram::new(HostBacking::Page4K, len)?;
    let tables = PageTables::identity(len, PageSize::Size4K, Gpa(layout::TABLES))
        .map_err(|e| VmmError::Config(e.to_string()))?;
    let base = data_base(len);
    let p = Params {
        data: layout::VIRT + base,
        chunks,
        stamps: layout::VIRT + base,
        ..Params::default()
    };
    let warm = Params { chunks: 0, ..p };
    let r = Vm::new(kvm, &vram, &tables, &code, warm, p)?.run(budget)?;
    let vm = timing(
        &read_stamps(vram.mem(), base, chunks + 1)?,
        r.params.checksum,
        r.wall,
        tsc_khz,
    );
    Ok(Calibration {
        native_ns: native.ns_per_access,
        vm_ns: vm.ns_per_access,
        ratio: vm.ns_per_access / native.ns_per_access,
    })
}

/// Whether `/dev/kvm` is served by PVM (`kvm_pvm`: a software hypervisor for machines without
/// hardware virtualization, as in cloud VMs without nested SVM/VMX).
pub fn kvm_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Runs the kernel of `prep` natively over fresh memory with `backing`.
pub fn run_native(prep: &Prepared, backing: HostBacking, tsc_khz: f64) -> Result<Timing, VmmError> {
    let ram = Ram::new(backing, prep.image_len())?;
    let (warm, params) = prep.write(ram.mem(), 0, ram.host_ptr() as u64)?;
    let kernel = code::kernel(prep.workload).map_err(|e| VmError::Asm(e.to_string()))?;
    let exe = native::Executable::new(&kernel).map_err(|e| {
        VmmError::Memory(MemoryError::Os {
            what: "mmap of code",
            source: e,
        })
    })?;
    // SAFETY (both calls): the parameters were written by `Prepared::write` for this kernel over
    // `ram`, which is alive for the calls: every address the kernel forms is inside `ram`.
    let _ = unsafe { exe.call(warm) };
    let (out, wall) = unsafe { exe.call(params) };
    let stamps = read_stamps(ram.mem(), prep.stamps_off(), prep.stamps())?;
    Ok(timing(&stamps, out.checksum, wall, tsc_khz))
}

/// Runs the kernel of `prep` in a VM over `ram` with `guest_page` guest pages.
pub fn run_vm(
    kvm: &kvm_ioctls::Kvm,
    ram: &Ram,
    prep: &Prepared,
    guest_page: PageSize,
    budget: Duration,
    tsc_khz: f64,
) -> Result<Timing, VmmError> {
    let tables = PageTables::identity(ram.len(), guest_page, Gpa(layout::TABLES))
        .map_err(|e| VmmError::Config(e.to_string()))?;
    let base = data_base(ram.len());
    if base + prep.image_len() > ram.len() {
        return Err(VmmError::Config("guest RAM too small for the image".into()));
    }
    let (warm, params) = prep.write(ram.mem(), base, layout::VIRT + base)?;
    let kernel = code::kernel(prep.workload).map_err(|e| VmError::Asm(e.to_string()))?;
    let vm = Vm::new(kvm, ram, &tables, &kernel, warm, params)?;
    let r = vm.run(budget)?;
    let khz = r.tsc_khz.map_or(tsc_khz, f64::from);
    let stamps = read_stamps(ram.mem(), base + prep.stamps_off(), prep.stamps())?;
    let t = timing(&stamps, r.params.checksum, r.wall, khz);
    // gups changed the table: zero the touched words so the next run starts from the same state.
    if prep.workload == Workload::Gups {
        for &o in &prep.offsets {
            ram.mem()
                .write_obj(0u64, GuestAddress(base + prep.index_len() + o))
                .map_err(|e| VmError::Memory(e.to_string()))?;
        }
    }
    Ok(t)
}

/// Measures every configuration of `cfg`. A backing the host cannot give is skipped with a note;
/// a guest failure is an error.
pub fn run(cfg: &Config, progress: &dyn RunProgress) -> Result<Report, VmmError> {
    cfg.validate()?;
    let start = std::time::Instant::now();
    let progress = &|line: &str| {
        progress.note(&format!("[{:5.1}s] {line}", start.elapsed().as_secs_f64()));
    };
    let kvm = open_kvm()?;
    let (cpu, nested) = cpu_info();
    let tsc_khz = {
        let vm = kvm.create_vm().map_err(|source| VmError::Kvm {
            what: "create VM",
            source,
        })?;
        let vcpu = vm.create_vcpu(0).map_err(|source| VmError::Kvm {
            what: "create vCPU",
            source,
        })?;
        vcpu.get_tsc_khz().unwrap_or(0)
    };
    if tsc_khz == 0 {
        return Err(VmmError::Config(
            "KVM does not report a stable TSC frequency".into(),
        ));
    }
    let khz = f64::from(tsc_khz);
    progress("calibrating: a register-only loop natively and in a VM");
    let calibration = calibrate(&kvm, cfg.budget, khz)?;
    let mut host_model = HostMemory::new(mem_total() / (1 << 30) * (1 << 30), Policy::FirstFit);
    let mut report = Report {
        cpu,
        nested,
        tsc_khz,
        footprint: cfg.footprint.bytes(),
        iterations: cfg.iterations,
        seed: cfg.seed,
        machine_model: predict::machine_label(cfg.machine),
        pvm: kvm_is_pvm(),
        calibration,
        hosts: Vec::new(),
        rows: Vec::new(),
        notes: Vec::new(),
    };
    let preps: Vec<Prepared> = cfg
        .workloads
        .iter()
        .map(|&w| {
            progress.note(&format!("preparing {w} over {}", cfg.footprint));
            Prepared::new(w, cfg.footprint, cfg.iterations, cfg.seed)
        })
        .collect::<Result<_, _>>()?;
    // Native baselines: 4 KiB pages for 4 KiB guest pages, THP for 2 MiB.
    let native_backing = |g: PageSize| {
        if g == PageSize::Size4K {
            HostBacking::Page4K
        } else {
            HostBacking::Thp
        }
    };
    let mut natives: HashMap<(Workload, HostBacking), Timing> = HashMap::new();
    for p in &preps {
        for &g in &cfg.guest_pages {
            let b = native_backing(g);
            if natives.contains_key(&(p.workload, b)) {
                continue;
            }
            progress.note(&format!("native {} over {b} pages", p.workload));
            let t = run_native(p, b, khz)?;
            let want = p.expected_checksum();
            if t.checksum != want {
                return Err(VmmError::Checksum {
                    workload: p.workload,
                    guest_page: "native",
                    backing: b,
                    guest: want,
                    native: t.checksum,
                });
            }
            natives.insert((p.workload, b), t);
        }
    }
    let image = preps.iter().map(Prepared::image_len).max().unwrap_or(0);
    for &backing in &cfg.backings {
        let ram_len = guest_ram(image, backing);
        if Gpa(ram_len) > MMIO_HOLE_START {
            return Err(VmmError::Config(format!(
                "guest RAM of {} would cross the MMIO hole at 3.75 GiB: lower --footprint",
                ByteSize(ram_len)
            )));
        }
        // The host's decision, on the memory manager's model of this machine.
        let vm_id = VmId(1);
        let model = match host_model.provision(vm_id, ram_len, backing.page(), Fallback::Refuse) {
            Ok(m) => {
                let _ = host_model.destroy(vm_id);
                format!(
                    "one extent of {} ({} register set{})",
                    ByteSize(ram_len),
                    m.segments.len(),
                    if m.segments.len() == 1 { "" } else { "s" }
                )
            }
            Err(e) => {
                report.notes.push(format!(
                    "backing {backing}: the memory manager refuses {} on this host ({e}); skipped",
                    ByteSize(ram_len)
                ));
                continue;
            }
        };
        progress.note(&format!(
            "guest RAM {} on {backing} pages",
            ByteSize(ram_len)
        ));
        let ram = match Ram::new(backing, ram_len) {
            Ok(r) => r,
            Err(MemoryError::Unavailable(why)) => {
                report
                    .notes
                    .push(format!("backing {backing} skipped: {why}"));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let extents = ram.extents()?;
        let glayout = GuestLayout::for_ram(ram.len());
        let (registers, reason) = registers_for(&glayout, &extents);
        report.hosts.push(HostReport {
            backing,
            ram: ram.len(),
            model,
            extents: extents.len(),
            extent_sizes: group_sizes(&extents),
            one_segment: extents.len() == 1,
            registers,
            reason,
        });
        for p in &preps {
            for &g in &cfg.guest_pages {
                progress.note(&format!(
                    "VM {} with {} guest pages on {backing} backing",
                    p.workload,
                    g.name()
                ));
                let vm = run_vm(&kvm, &ram, p, g, cfg.budget, khz)?;
                let nb = native_backing(g);
                let native = natives[&(p.workload, nb)];
                if vm.checksum != native.checksum {
                    return Err(VmmError::Checksum {
                        workload: p.workload,
                        guest_page: g.name(),
                        backing,
                        guest: vm.checksum,
                        native: native.checksum,
                    });
                }
                let predicted = if cfg.predict {
                    progress.note("  simulating the same configuration");
                    match predict::predict(
                        cfg.machine,
                        p.workload,
                        cfg.footprint,
                        cfg.iterations,
                        cfg.seed,
                        g,
                        backing.page(),
                    ) {
                        Ok(pr) => Some(pr),
                        Err(e) => {
                            report.notes.push(format!("prediction failed: {e}"));
                            None
                        }
                    }
                } else {
                    None
                };
                report.rows.push(Row {
                    workload: p.workload,
                    guest_page: g,
                    backing,
                    native_backing: nb,
                    native,
                    slowdown: vm.ns_per_access / native.ns_per_access,
                    vm,
                    predicted,
                });
            }
        }
    }
    Ok(report)
}
