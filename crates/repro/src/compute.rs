//! Computes every section of the report.

use crate::passes::{Vm, total_cycles};
use crate::{
    Claim, FragOutcome, FragRow, Options, Progress, ProvisioningRow, ReproError, Results,
    RunConfig, RunRow, SchemeFigures, WalkRefRow,
};
use compromis_cluster::{
    EventStream, Fallback, Fleet, PolicyKind, ReplayOptions, SyntheticConfig, SyntheticTrace,
    TraceFormat, TraceOptions, open_trace, simulate_with,
};
use compromis_hostmem::Fallback as HostFallback;
use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::{ExperimentRequest, HostRequest, Outcome, SimResults, Source as SimSource};
use compromis_types::{ByteSize, Gva, Op, PageSize};
use compromis_vmem::GuestConfig;
use compromis_workload::{WorkloadKind, WorkloadSpec};
use rayon::prelude::*;
use std::path::PathBuf;

/// Guest page sizes of sections 1 and 2.
pub(crate) const GUEST_PAGES: [PageSize; 2] = [PageSize::Size4K, PageSize::Size2M];
/// Host page sizes of sections 1 and 2.
pub(crate) const HOST_PAGES: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];
/// Host fills of section 4.
pub(crate) const FILLS: [f64; 5] = [0.0, 0.5, 0.7, 0.8, 0.9];
/// Segment register sets of the multi-segment fallback in section 4.
const FRAG_SEGMENTS: usize = 8;
/// Host RAM of section 4 as a multiple of the VM's RAM (room for the VM at 90 % fill).
const FRAG_HOST_FACTOR: u64 = 16;
/// Largest EPT leaves of section 4 (with 1 GiB, fragmentation shows as smaller leaves).
pub(crate) const FRAG_HOST_PAGES: [PageSize; 2] = [PageSize::Size2M, PageSize::Size1G];
/// Workloads of the multi-process runs.
const MP_WORKLOADS: [WorkloadKind; 2] = [WorkloadKind::Churn, WorkloadKind::Gups];
/// Loads of the caches-off stream of section 1.
const CLOSED_FORM_LOADS: u64 = 5_000;
/// Mapped region of the caches-off stream of section 1.
const CLOSED_FORM_REGION: u64 = 64 << 20;
/// Where the caches-off stream maps its region (1 GiB aligned).
const CLOSED_FORM_BASE: u64 = 0x7f00_0000_0000;

/// A real trace of `../shared/data` and how section 3 replays it.
struct RealTrace {
    /// Folder or file under the data folder.
    rel: &'static str,
    /// Format.
    format: TraceFormat,
    /// Fleet (sized after the trace's own cluster where known, so capacity is not the story).
    fleet: &'static str,
}

const REAL_TRACES: [RealTrace; 4] = [
    // Azure V1 dev split: peak ~20.6k live VMs; 1,000 hosts of 192 GiB run it without refusals.
    RealTrace {
        rel: "azure-v1-rnn",
        format: TraceFormat::AzureRnn,
        fleet: "1000x192GiB/48c",
    },
    // One Google 2011 cell had about 12,500 machines.
    RealTrace {
        rel: "google-2011",
        format: TraceFormat::Google2011,
        fleet: "12500x192GiB/48c",
    },
    // The Alibaba 2018 cluster has about 4,000 machines; the sample of 20,000 rows needs ~200.
    RealTrace {
        rel: "alibaba-2018/alibaba2018_container_meta_sample.csv",
        format: TraceFormat::Alibaba2018,
        fleet: "1000x192GiB/96c",
    },
    // Thirty Bitbrains VMs: a handful of hosts.
    RealTrace {
        rel: "bitbrains-rnd",
        format: TraceFormat::Bitbrains,
        fleet: "4x256GiB/64c",
    },
];

/// Fleet for an extra trace given by the user (the `compromis place` default with a trace).
const EXTRA_TRACE_FLEET: &str = "20000x192GiB/24c";

fn config_of(opts: &Options) -> RunConfig {
    let (footprint, accesses, quantum, limit, vms) = if opts.quick {
        (64u64 << 20, 100_000, 2_500, Some(50_000), 5_000)
    } else {
        (4u64 << 30, 8_000_000, 10_000, None, 20_000)
    };
    RunConfig {
        machine: opts.machine.name().to_owned(),
        quick: opts.quick,
        seed: opts.seed,
        footprint,
        accesses,
        // As `compromis sim`: a tenth of the accesses warm the TLBs and caches; regions are
        // populated when mapped, so no first-touch fault falls in the measured phase.
        warmup: accesses / 10,
        mp_processes: 4,
        mp_quantum: quantum,
        trace_event_limit: limit,
        synthetic_vms: vms,
        frag_workload: WorkloadKind::Gups.name().to_owned(),
        frag_host_pages: FRAG_HOST_PAGES
            .iter()
            .map(|p| p.name().to_owned())
            .collect(),
        frag_host_factor: FRAG_HOST_FACTOR,
    }
}

/// Runs `a` and `b` at the same time on the rayon pool, or one after the other.
fn both<A: Send, B: Send>(
    sequential: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if sequential {
        let x = a();
        (x, b())
    } else {
        rayon::join(a, b)
    }
}

/// Runs `f` as progress stage `name` of `total` configurations.
fn stage<T>(progress: &dyn Progress, name: &str, total: usize, f: impl FnOnce() -> T) -> T {
    progress.stage(name, u64::try_from(total).unwrap_or(0));
    let r = f();
    progress.finish(name);
    r
}

const STAGE_OVERHEADS: &str = "overheads";
const STAGE_WALK_REFS: &str = "walk references";
const STAGE_MULTIPROCESS: &str = "multi-process";
const STAGE_PROVISIONING: &str = "provisioning";
const STAGE_FRAGMENTATION: &str = "fragmentation";

/// Runs every section. The sections are independent: they run at the same time on the rayon
/// pool (one after another with [`Options::sequential`]), each collecting its configurations in
/// a fixed order, so the results are the same either way.
pub fn run(opts: &Options, progress: &dyn Progress) -> Result<Results, ReproError> {
    let cfg = config_of(opts);
    let machine = opts.machine.config()?;
    let seq = opts.sequential;
    let (sources, traces_missing) = trace_sources(opts);
    // Open every trace once up front so a bad one fails before any simulation starts.
    for s in &sources {
        drop(open_source(s, &s.fleet()?, &cfg)?);
    }
    let (cfg, machine, sources) = (&cfg, &machine, &sources);

    let overheads = || {
        stage(
            progress,
            STAGE_OVERHEADS,
            WorkloadKind::ALL.len() * GUEST_PAGES.len() * HOST_PAGES.len(),
            || overheads(cfg, machine, progress),
        )
    };
    let fragmentation = || {
        stage(
            progress,
            STAGE_FRAGMENTATION,
            FRAG_HOST_PAGES.len() * FILLS.len() * 2,
            || fragmentation(cfg, machine, progress),
        )
    };
    let multiprocess = || {
        stage(
            progress,
            STAGE_MULTIPROCESS,
            MP_WORKLOADS.len() * MP_HOST_PAGES.len(),
            || multiprocess(cfg, machine, progress),
        )
    };
    let anchors = || crate::anchors::run_anchors(opts.quick, opts.seed, progress);
    let walk_refs = || {
        stage(
            progress,
            STAGE_WALK_REFS,
            GUEST_PAGES.len() * HOST_PAGES.len(),
            || walk_refs(cfg, machine, progress),
        )
    };
    let provisioning = || {
        stage(
            progress,
            STAGE_PROVISIONING,
            sources.len() * PolicyKind::ALL.len(),
            || provisioning(cfg, sources, progress),
        )
    };
    let utilisation = || {
        let jobs = crate::placement::jobs(sources.len());
        stage(
            progress,
            crate::placement::STAGE,
            usize::try_from(jobs).unwrap_or(0),
            || crate::placement::sweep(cfg, sources, progress),
        )
    };
    // The longest sections first: rayon starts the left side of a join at once and the right
    // side when a worker is free.
    let (overheads, (fragmentation, (multiprocess, (anchors, rest)))) =
        both(seq, overheads, || {
            both(seq, fragmentation, || {
                both(seq, multiprocess, || {
                    both(seq, anchors, || {
                        both(seq, walk_refs, || both(seq, provisioning, utilisation))
                    })
                })
            })
        });
    let (walk_refs, (provisioning, utilisation)) = rest;
    let overheads = overheads?;
    let mut walk_refs = walk_refs?;
    caches_on(&mut walk_refs, &overheads);

    let mut r = Results {
        config: cfg.clone(),
        walk_refs,
        fair: crate::fair::fair_rows(&overheads),
        overheads,
        multiprocess: multiprocess?,
        provisioning: provisioning?,
        traces_missing,
        utilisation: utilisation?,
        fragmentation: fragmentation?,
        claims: Vec::new(),
        anchors: anchors?,
    };
    r.claims = claims(&r);
    Ok(r)
}

/// The experiment request of every section: the builder in `compromis_sim` fills the defaults
/// (VM memory, warm-up) exactly as `compromis sim` does.
fn request(
    cfg: &RunConfig,
    machine: MachineConfig,
    guest: PageSize,
    host_page: PageSize,
    source: SimSource,
) -> ExperimentRequest {
    ExperimentRequest {
        source,
        machine,
        schemes: SchemeKind::ALL.to_vec(),
        guest: GuestConfig {
            page: guest,
            ..GuestConfig::default()
        },
        host_page,
        seed: cfg.seed,
        ..ExperimentRequest::default()
    }
}

fn workload_source(spec: &WorkloadSpec) -> SimSource {
    SimSource::Workload {
        kind: spec.kind,
        footprint: Some(spec.footprint),
        accesses: Some(spec.accesses),
        processes: Some(spec.processes),
        quantum: Some(spec.quantum),
    }
}

fn figures(o: &Outcome) -> Vec<SchemeFigures> {
    o.schemes
        .iter()
        .map(|s| {
            let m = &s.result.measured;
            SchemeFigures {
                scheme: s.result.scheme.name().to_owned(),
                cycles: s.cycles.total,
                overhead: s.cycles.overhead,
                refs_per_walk: s.derived.refs_per_walk,
                walk_latency: s.cycles.walk_latency,
                walks: m.walks,
                exits_pt_write: m.exits.pt_write,
                exits_cr3_load: m.exits.cr3_load,
                exits: m.exits.total(),
                exits_pki: s.derived.exits_pki,
                warmup_exits: s.result.warmup.exits.total(),
                fallback_translations: m.fallback_translations,
            }
        })
        .collect()
}

pub(crate) fn run_row(o: &Outcome, spec: &WorkloadSpec, guest: PageSize, host: PageSize) -> RunRow {
    RunRow {
        workload: spec.kind.name().to_owned(),
        processes: spec.processes,
        guest: guest.name().to_owned(),
        host: host.name().to_owned(),
        ideal_cycles: o.ideal.cycles.total,
        schemes: figures(o),
        speedup_vs_ept: o
            .speedup(SchemeKind::Compromis, SchemeKind::Ept)
            .unwrap_or(0.0),
        speedup_vs_shadow: o
            .speedup(SchemeKind::Compromis, SchemeKind::Shadow)
            .unwrap_or(0.0),
    }
}

fn spec(cfg: &RunConfig, kind: WorkloadKind, processes: u16) -> WorkloadSpec {
    WorkloadSpec {
        kind,
        footprint: ByteSize(cfg.footprint),
        accesses: cfg.accesses,
        processes,
        quantum: cfg.mp_quantum,
        seed: cfg.seed,
    }
}

/// Section 2: every workload at each guest and host page ([`crate::passes::host_rows`]: runs
/// that are the same at several host pages are simulated once).
fn overheads(
    cfg: &RunConfig,
    machine: &MachineConfig,
    progress: &dyn Progress,
) -> Result<Vec<RunRow>, ReproError> {
    let mut jobs = Vec::new();
    for kind in WorkloadKind::ALL {
        for guest in GUEST_PAGES {
            jobs.push((spec(cfg, kind, 1), guest));
        }
    }
    rows_of(cfg, machine, &jobs, &HOST_PAGES, &|| {
        progress.step(STAGE_OVERHEADS);
    })
}

/// Host pages of the multi-process runs.
const MP_HOST_PAGES: [PageSize; 2] = [PageSize::Size4K, PageSize::Size2M];

fn multiprocess(
    cfg: &RunConfig,
    machine: &MachineConfig,
    progress: &dyn Progress,
) -> Result<Vec<RunRow>, ReproError> {
    let jobs: Vec<(WorkloadSpec, PageSize)> = MP_WORKLOADS
        .iter()
        .map(|&kind| (spec(cfg, kind, cfg.mp_processes), PageSize::Size4K))
        .collect();
    rows_of(cfg, machine, &jobs, &MP_HOST_PAGES, &|| {
        progress.step(STAGE_MULTIPROCESS);
    })
}

/// The rows of each `(workload, guest page)` job at every host page of `hosts`, jobs in parallel,
/// in the order of `jobs` ([`crate::passes::host_rows`]); `step` after each simulation pass.
fn rows_of(
    cfg: &RunConfig,
    machine: &MachineConfig,
    jobs: &[(WorkloadSpec, PageSize)],
    hosts: &[PageSize],
    step: &(dyn Fn() + Sync),
) -> Result<Vec<RunRow>, ReproError> {
    let rows: Vec<Vec<RunRow>> = jobs
        .par_iter()
        .map(|(spec, guest)| {
            let guest = *guest;
            crate::passes::host_rows(
                spec,
                guest,
                hosts,
                &|host| request(cfg, machine.clone(), guest, host, workload_source(spec)).build(),
                step,
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(rows.into_iter().flatten().collect())
}

/// `machine` with every TLB-like structure off (section 1's closed-form check), as
/// [`MachineConfig::no_caches`] does to the model's base values.
fn no_caches(machine: &MachineConfig) -> MachineConfig {
    let off = MachineConfig::no_caches();
    MachineConfig {
        tlb: off.tlb,
        walk_caches: off.walk_caches,
        ..machine.clone()
    }
}

/// SplitMix64: the caches-off stream's addresses (seeded, no allocation).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `(n, m, closed form)` of `scheme` for a 4-level guest and 4-level EPT.
pub(crate) fn closed_form(scheme: SchemeKind, guest: PageSize, host: PageSize) -> (u64, u64, u64) {
    let n = u64::from(guest.walk_refs(4));
    let m = u64::from(host.walk_refs(4));
    match scheme {
        SchemeKind::Ept => (n, m, (n + 1) * (m + 1) - 1),
        SchemeKind::Shadow => {
            let s = u64::from(guest.min(host).walk_refs(4));
            (s, 0, s)
        }
        _ => (n, 0, n),
    }
}

/// Section 1's caches-off runs; `caches_on` is filled afterwards from section 2 ([`caches_on`]).
fn walk_refs(
    cfg: &RunConfig,
    machine: &MachineConfig,
    progress: &dyn Progress,
) -> Result<Vec<WalkRefRow>, ReproError> {
    let mut jobs = Vec::new();
    for guest in GUEST_PAGES {
        for host in HOST_PAGES {
            jobs.push((guest, host));
        }
    }
    let per_pair: Vec<Vec<WalkRefRow>> =
        jobs.par_iter()
            .map(|&(guest, host)| {
                let config = || format!("caches-off random loads, guest {guest} host {host}");
                let plan = ExperimentRequest {
                    vm_memory: Some(ByteSize::gib(1)),
                    ..request(
                        cfg,
                        no_caches(machine),
                        guest,
                        host,
                        SimSource::Stream {
                            name: "random loads".to_owned(),
                        },
                    )
                }
                .build()
                .map_err(|source| ReproError::Experiment {
                    config: config(),
                    source,
                })?;
                let seed = cfg.seed;
                let ops = std::iter::once(Op::Map {
                    start: Gva(CLOSED_FORM_BASE),
                    len: CLOSED_FORM_REGION,
                })
                .chain((0..CLOSED_FORM_LOADS).map(move |i| {
                    Op::load(CLOSED_FORM_BASE + splitmix(seed ^ i) % CLOSED_FORM_REGION)
                }));
                let o = compromis_sim::run_source(
                    &plan.experiment,
                    "random loads",
                    ops.map(Ok::<_, std::convert::Infallible>),
                    &|_| {},
                )
                .map_err(|source| ReproError::Experiment {
                    config: config(),
                    source,
                })?;
                progress.step(STAGE_WALK_REFS);
                Ok(o.schemes
                    .iter()
                    .map(|s| {
                        let kind = s.result.scheme;
                        let (n, m, closed) = closed_form(kind, guest, host);
                        let st = &s.result.measured;
                        let refs = st.walk_refs_guest + st.walk_refs_host;
                        WalkRefRow {
                            scheme: kind.name().to_owned(),
                            guest: guest.name().to_owned(),
                            host: host.name().to_owned(),
                            n,
                            m,
                            closed_form: closed,
                            walks_off: st.walks,
                            refs_off: refs,
                            caches_off: s.derived.refs_per_walk,
                            agrees: st.walks > 0 && refs == closed * st.walks,
                            caches_on: None,
                        }
                    })
                    .collect())
            })
            .collect::<Result<_, ReproError>>()?;
    // Order: scheme, then guest, then host.
    let mut rows: Vec<WalkRefRow> = per_pair.into_iter().flatten().collect();
    let rank = |s: &str| {
        SchemeKind::ALL
            .iter()
            .position(|k| k.name() == s)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by_key(|r| rank(&r.scheme));
    Ok(rows)
}

/// Fills section 1's `caches_on`: the mean references per walk of section 2's gups run at the
/// same page sizes (`None` when that run made no walk in its measured phase).
fn caches_on(rows: &mut [WalkRefRow], overheads: &[RunRow]) {
    for row in rows {
        row.caches_on = overheads
            .iter()
            .find(|r| {
                r.workload == WorkloadKind::Gups.name()
                    && r.guest == row.guest
                    && r.host == row.host
            })
            .and_then(|r| r.schemes.iter().find(|f| f.scheme == row.scheme))
            .filter(|f| f.walks > 0)
            .map(|f| f.refs_per_walk);
    }
}

/// A trace of section 3: name, fleet, and how to open it.
pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) fleet: String,
    kind: SourceKind,
}

impl Source {
    /// The fleet, parsed.
    pub(crate) fn fleet(&self) -> Result<Fleet, ReproError> {
        self.fleet
            .parse()
            .map_err(|e: compromis_cluster::FleetError| ReproError::Fleet {
                fleet: self.fleet.clone(),
                message: e.to_string(),
            })
    }
}

enum SourceKind {
    Synthetic,
    File(PathBuf, TraceFormat),
}

fn trace_sources(opts: &Options) -> (Vec<Source>, Vec<String>) {
    let mut sources = vec![Source {
        name: "synthetic".to_owned(),
        fleet: compromis_cluster::fleet::DEFAULT_SYNTHETIC_FLEET.to_owned(),
        kind: SourceKind::Synthetic,
    }];
    let mut missing = Vec::new();
    for t in &REAL_TRACES {
        match &opts.data_dir {
            Some(dir) if dir.join(t.rel).exists() => sources.push(Source {
                name: t.rel.split('/').next().unwrap_or(t.rel).to_owned(),
                fleet: t.fleet.to_owned(),
                kind: SourceKind::File(dir.join(t.rel), t.format),
            }),
            _ => missing.push(t.rel.to_owned()),
        }
    }
    if let Some((path, format)) = &opts.extra_trace {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        sources.push(Source {
            name: format!("{name} ({format})"),
            fleet: EXTRA_TRACE_FLEET.to_owned(),
            kind: SourceKind::File(path.clone(), *format),
        });
    }
    (sources, missing)
}

pub(crate) fn open_source(
    s: &Source,
    fleet: &Fleet,
    cfg: &RunConfig,
) -> Result<EventStream, ReproError> {
    let stream: EventStream = match &s.kind {
        SourceKind::Synthetic => {
            let t = SyntheticTrace::new(SyntheticConfig {
                vms: cfg.synthetic_vms,
                seed: cfg.seed,
                ..SyntheticConfig::default()
            })
            .map_err(|source| ReproError::Trace {
                path: PathBuf::from("<synthetic>"),
                format: "synthetic".into(),
                source,
            })?;
            Box::new(t)
        }
        SourceKind::File(path, format) => {
            let topts = TraceOptions {
                seed: cfg.seed,
                norm_mem_bytes: fleet.max_host_mem(),
                ..TraceOptions::default()
            };
            open_trace(path, *format, &topts).map_err(|source| ReproError::Trace {
                path: path.clone(),
                format: format.name().to_owned(),
                source,
            })?
        }
    };
    Ok(match cfg.trace_event_limit {
        Some(n) => Box::new(stream.take(usize::try_from(n).unwrap_or(usize::MAX))),
        None => stream,
    })
}

/// Largest host memory of a fleet (what a normalized 1.0 stands for).
trait MaxHostMem {
    fn max_host_mem(&self) -> u64;
}

impl MaxHostMem for Fleet {
    fn max_host_mem(&self) -> u64 {
        self.groups.iter().map(|g| g.1.mem_bytes).max().unwrap_or(0)
    }
}

fn provisioning(
    cfg: &RunConfig,
    sources: &[Source],
    progress: &dyn Progress,
) -> Result<Vec<ProvisioningRow>, ReproError> {
    let mut fleets = Vec::new();
    for s in sources {
        let f: Fleet = s
            .fleet
            .parse()
            .map_err(|e: compromis_cluster::FleetError| ReproError::Fleet {
                fleet: s.fleet.clone(),
                message: e.to_string(),
            })?;
        fleets.push(f);
    }
    let mut jobs = Vec::new();
    for (i, _) in sources.iter().enumerate() {
        for p in PolicyKind::ALL {
            jobs.push((i, p));
        }
    }
    let popts = ReplayOptions {
        seed: cfg.seed,
        ..ReplayOptions::default()
    };
    jobs.par_iter()
        .map(|&(i, policy)| {
            let s = &sources[i];
            let events = open_source(s, &fleets[i], cfg)?;
            let rep = simulate_with(events, &fleets[i], &policy, &Fallback::Segments(8), &popts)
                .map_err(|source| ReproError::Placement {
                    trace: s.name.clone(),
                    policy: policy.name().to_owned(),
                    source,
                })?;
            progress.step(STAGE_PROVISIONING);
            Ok(ProvisioningRow {
                trace: s.name.clone(),
                fleet: s.fleet.clone(),
                policy: policy.name().to_owned(),
                contiguity_aware: policy.build(0).contiguity_aware(),
                events: rep.events,
                placed: rep.placed,
                single_segment: rep.single_segment,
                share: rep.single_segment_share(),
                rejected: rep.rejections.values().sum(),
            })
        })
        .collect()
}

fn fragmentation(
    cfg: &RunConfig,
    machine: &MachineConfig,
    progress: &dyn Progress,
) -> Result<Vec<FragRow>, ReproError> {
    let spec = spec(cfg, WorkloadKind::Gups, 1);
    let ram = compromis_sim::default_ram(compromis_workload::mapped_bytes(&spec));
    let host = ByteSize(ram.bytes() * FRAG_HOST_FACTOR);
    let fallbacks = [HostFallback::Segments(FRAG_SEGMENTS), HostFallback::Ept];
    let plan = |host_page, fill, fallback| ExperimentRequest {
        schemes: vec![SchemeKind::Ept, SchemeKind::Compromis],
        host: HostRequest::Aged {
            memory: Some(host),
            fill,
            fallback,
        },
        ..request(
            cfg,
            machine.clone(),
            PageSize::Size4K,
            host_page,
            workload_source(&spec),
        )
    };
    let row = |host_page: PageSize, fill: f64, fallback: HostFallback| {
        let fb = fallback.to_string();
        let config = || format!("gups on a host aged to {fill} ({fb}, host {host_page})");
        // Only the two schemes' own cycles are reported: no perfect-TLB baseline is run.
        let outcome = match plan(host_page, fill, fallback).build().and_then(Vm::build) {
            Ok(vm) => {
                let r = vm
                    .simulate(&[SchemeKind::Ept, SchemeKind::Compromis], false)
                    .map_err(|source| ReproError::Experiment {
                        config: config(),
                        source,
                    })?;
                Ok(frag_outcome(&vm, &r))
            }
            // The aged host refusing the VM is a result of this section, not an error.
            Err(source) => match compromis_sim::is_refused(&source) {
                Some(why) => Err(format!("the aged host cannot provision the VM: {why}")),
                None => {
                    return Err(ReproError::Experiment {
                        config: config(),
                        source,
                    });
                }
            },
        };
        progress.step(STAGE_FRAGMENTATION);
        Ok(FragRow {
            host_page: host_page.name().to_owned(),
            fill,
            fallback: fb,
            outcome,
        })
    };
    let mut jobs = Vec::new();
    for host_page in FRAG_HOST_PAGES {
        for fill in FILLS {
            jobs.push((host_page, fill));
        }
    }
    // Per (host page, fill): the row of each fallback. When the aged host gives the VM one
    // extent without a fallback, the fallback is never consulted and both runs are the same
    // simulation: it runs once (a cheap provisioning with `refuse` tells).
    let per_job: Vec<Vec<FragRow>> = jobs
        .par_iter()
        .map(|&(host_page, fill)| {
            let unneeded = plan(host_page, fill, HostFallback::Refuse)
                .build()
                .is_ok_and(|p| compromis_sim::build_vm(&p.experiment.vm).is_ok());
            if unneeded {
                let first = row(host_page, fill, fallbacks[0])?;
                let mut rows = vec![first.clone()];
                for &fallback in &fallbacks[1..] {
                    progress.step(STAGE_FRAGMENTATION);
                    rows.push(FragRow {
                        fallback: fallback.to_string(),
                        ..first.clone()
                    });
                }
                Ok(rows)
            } else {
                fallbacks
                    .par_iter()
                    .map(|&fallback| row(host_page, fill, fallback))
                    .collect()
            }
        })
        .collect::<Result<_, ReproError>>()?;
    // Rows in host page, fallback, fill order.
    let mut out = Vec::with_capacity(jobs.len() * fallbacks.len());
    for host_rows in per_job.chunks(FILLS.len()) {
        for f in 0..fallbacks.len() {
            out.extend(host_rows.iter().map(|rows| rows[f].clone()));
        }
    }
    Ok(out)
}

fn frag_outcome(vm: &Vm, r: &SimResults) -> FragOutcome {
    let run = |k| r.schemes.iter().find(|s| s.scheme == k);
    let cyc = |k| run(k).map_or(0.0, |s| total_cycles(&s.measured, vm.machine()));
    let (ept, compromis) = (cyc(SchemeKind::Ept), cyc(SchemeKind::Compromis));
    let info = &vm.info;
    FragOutcome {
        host_fragmentation: info.host_fragmentation,
        provisioning: info.provisioning.to_string(),
        host_extents: info.host_extents,
        segments: info.segments,
        ept_leaves: info.ept_leaves,
        fallback_translations: run(SchemeKind::Compromis)
            .map_or(0, |s| s.measured.fallback_translations),
        ept_cycles: ept,
        compromis_cycles: compromis,
        speedup_vs_ept: if compromis > 0.0 {
            ept / compromis
        } else {
            0.0
        },
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// `a / b` of two small counts.
#[allow(clippy::cast_precision_loss)] // reference counts are below 100
fn ratio_of(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// A mean with two decimals, or `n/a` when there was nothing to average.
pub(crate) fn opt2(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"))
}

fn describe(r: &RunRow) -> String {
    let procs = if r.processes > 1 {
        format!(" ({} processes)", r.processes)
    } else {
        String::new()
    };
    format!("{}{procs}, guest {} / host {}", r.workload, r.guest, r.host)
}

/// "from A to B at host pages 4k / 2m / 1g": the largest runtime speedup of section 2b at each host
/// page size (the same host page for both schemes).
fn fair_extremes(
    r: &Results,
    pick: impl Fn(&crate::FairRow) -> &Vec<Option<crate::Reading>>,
) -> String {
    let parts: Vec<String> = crate::fair::FAIR_HOST_PAGES
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let best = crate::fair::best_of(&r.fair, |f| pick(f).get(i).copied().flatten());
            format!(
                "host {h}: up to {}",
                best.map_or_else(|| "-".to_owned(), |(_, x)| crate::fair::show(Some(x)))
            )
        })
        .collect();
    format!(
        "per host page size (runtime, overhead ratio): {}",
        parts.join("; ")
    )
}

/// "host 4k: up to 1.234x (5.67x) at 0.12 exits/1k; ...": the largest speedup over shadow of
/// section 2b at each host page size, beside shadow's exit rate on that run.
fn shadow_extremes(r: &Results) -> String {
    let parts: Vec<String> = crate::fair::FAIR_HOST_PAGES
        .iter()
        .enumerate()
        .map(|(i, h)| {
            match crate::fair::best_of(&r.fair, |f| f.vs_shadow.get(i).copied().flatten()) {
                Some((f, x)) => format!(
                    "host {h}: up to {} at {} shadow exits/1k",
                    crate::fair::show(Some(x)),
                    f.shadow_exits_pki
                        .get(i)
                        .copied()
                        .flatten()
                        .map_or_else(|| "-".to_owned(), |p| format!("{p:.2}"))
                ),
                None => format!("host {h}: up to -"),
            }
        })
        .collect();
    format!(
        "per host page size (runtime, overhead ratio, shadow's exit rate): {}",
        parts.join("; ")
    )
}

/// Section 5: the paper's claims beside our figures.
fn claims(r: &Results) -> Vec<Claim> {
    let mut out = Vec::new();
    let off = |s: &str| {
        r.walk_refs
            .iter()
            .find(|w| w.scheme == s && w.guest == "4k" && w.host == "4k")
    };
    if let (Some(e), Some(c)) = (off("ept"), off("compromis")) {
        out.push(Claim {
            paper: "A TLB miss costs 24 memory references under nested paging and 4 under Compromis (4 KiB guest and host pages).".into(),
            ours: format!(
                "{:.2} vs {:.2} references with caches off (closed form {} vs {}); {} vs {} on gups with the default walk caches",
                e.caches_off, c.caches_off, e.closed_form, c.closed_form, opt2(e.caches_on), opt2(c.caches_on)
            ),
            explanation: if e.agrees && c.agrees {
                let on = match (e.caches_on, c.caches_on) {
                    (Some(a), Some(b)) if b > 0.0 => format!(
                        "a ratio of {:.2}x instead of {:.2}x",
                        a / b,
                        ratio_of(e.closed_form, c.closed_form)
                    ),
                    _ => "no ratio (no walk after warm-up)".to_owned(),
                };
                format!(
                    "Agrees exactly with caches off: the walk is the closed form (n+1)(m+1)-1 for EPT and n for Compromis. With caches on, page-walk caches and the nested TLB skip most references, EPT's more than Compromis's, so the gap narrows: {on}."
                )
            } else {
                "DISAGREES: the simulated walk differs from the closed form; see section 1.".into()
            },
        });
    }
    if let Some(b) = r.best_vs_shadow() {
        let s = b.speedup_vs_shadow;
        let per_page = shadow_extremes(r);
        let sh = b.schemes.iter().find(|f| f.scheme == "shadow");
        let exits = sh.map_or_else(
            || "no shadow run".to_owned(),
            |f| {
                format!(
                    "{:.2} VM exits per 1,000 instructions in the measured phase ({} exits: {} CR3 loads, {} page-table writes, {} others), {} more in warm-up",
                    f.exits_pki,
                    f.exits,
                    f.exits_cr3_load,
                    f.exits_pt_write,
                    f.exits - f.exits_cr3_load - f.exits_pt_write,
                    f.warmup_exits
                )
            },
        );
        out.push(Claim {
            paper: "Compromis is up to 30% faster than shadow paging.".into(),
            ours: format!(
                "up to {:.1}% faster (speedup {s:.3}x) on {}, where shadow paging takes {exits}; {per_page}",
                100.0 * (s - 1.0),
                describe(b)
            ),
            explanation: format!(
                "{} Shadow paging walks only its own gVA -> hPA table, so what Compromis gains over it is shadow's VM exits: the speedup follows shadow's exit rate (printed beside every speedup over shadow in this report), and the cost of each exit in cycles is an assumption of our model (docs/machine-model.md, `exits.*`). Shadow tables are kept out of sync, as KVM and Xen do (leaf writes free, reconciled at INVLPG, CR3 load and the hidden fault that fills an entry); populated memory is zeroed by the guest right after each fault, so those fills happen in warm-up and the measured phase is the steady state. Our churn and multi-process workloads are synthetic (a context switch every {} accesses), so the size of this gap follows their exit rates and the exit costs more than any measurement. Section 2b gives the comparison at every host page size.",
                if s > 1.30 {
                    "Ours is larger than the paper's."
                } else if s >= 1.25 {
                    "Ours is close to the paper's."
                } else {
                    "Ours is smaller than the paper's."
                },
                r.config.mp_quantum
            ),
        });
    }
    if let Some(b) = r.best_vs_ept() {
        let s = b.speedup_vs_ept;
        let overhead = match (
            b.schemes.iter().find(|f| f.scheme == "ept"),
            b.schemes.iter().find(|f| f.scheme == "compromis"),
        ) {
            (Some(e), Some(c)) if c.overhead > 0.0 => format!("{:.2}x", e.overhead / c.overhead),
            _ => "n/a".to_owned(),
        };
        let best = crate::fair::best_of(&r.fair, |f| f.vs_ept_best);
        let per_page = fair_extremes(r, |f| &f.vs_ept);
        out.push(Claim {
            paper: "Compromis is up to 370% faster than nested paging (EPT).".into(),
            ours: format!(
                "up to {:.1}% faster (runtime {s:.3}x, overhead ratio {overhead}) on {}, EPT at the same host page; {}; {per_page}",
                100.0 * (s - 1.0),
                describe(b),
                match best {
                    Some((f, x)) => format!(
                        "against EPT at the best host page the same contiguity allows (1 GiB): up to {} on {}, guest {}",
                        crate::fair::show(Some(x)),
                        f.workload,
                        f.guest
                    ),
                    None => "no run at 1 GiB host pages".to_owned(),
                }
            ),
            explanation: format!(
                "\"370% faster\" has two readings, both checked here: a run-time ratio runtime(EPT) / runtime(Compromis) = 1 + 3.70 = 4.7x (ours: {s:.3}x, {}), or EPT's translation overhead 4.7x Compromis's, overhead = cycles / ideal - 1 (ours: {overhead} on the same run). The largest figure comes from guest {} / host {} pages: a host that gives the VM one extent, as Compromis requires, can also map it with 1 GiB EPT pages, and against that EPT the gain is the \"best host page\" figure above (section 2b gives every page size). Our cycle model charges the references of one walk one after another (a dependent chain), overlaps independent misses only up to the machine's outstanding-miss limit, instruction window and page walkers (docs/machine-model.md, memory-level parallelism), and our workloads are synthetic and short ({} accesses, {} footprint), so a large TLB-reach gap on a real machine with much larger footprints is not reproduced one for one.",
                if s >= 4.7 { "it reaches 4.7x" } else { "smaller" },
                b.guest,
                b.host,
                r.config.accesses,
                ByteSize(r.config.footprint)
            ),
        });
    }
    if let Some(b) = r.best_share() {
        let aware_min = r
            .provisioning
            .iter()
            .filter(|p| p.policy == PolicyKind::ContigFirstFit.name())
            .min_by(|a, b| a.share.total_cmp(&b.share));
        out.push(Claim {
            paper: "Up to 99.99% of the VMs of 310 datacenter traces can be provisioned with a single memory segment.".into(),
            ours: format!(
                "up to {} ({} of {} VMs) on {} under {}{}",
                pct(b.share),
                b.single_segment,
                b.placed,
                b.trace,
                b.policy,
                aware_min.map_or_else(String::new, |a| format!(
                    "; the paper's contiguity-aware first-fit gives at least {} on every trace here (lowest: {})",
                    pct(a.share),
                    a.trace
                ))
            ),
            explanation: format!(
                "We replay {} trace(s) ({}), not the paper's 310, on fleets we sized ourselves (section 3); the share depends on how full the fleet is. Contiguity-oblivious policies (today's schedulers) give the lower shares in the table; a contiguity-aware one is what the claim assumes.",
                r.provisioning.iter().map(|p| p.trace.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
                r.provisioning.iter().map(|p| p.trace.as_str()).collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_match_the_paper() {
        use PageSize::*;
        assert_eq!(closed_form(SchemeKind::Ept, Size4K, Size4K).2, 24);
        assert_eq!(closed_form(SchemeKind::Ept, Size4K, Size2M).2, 19);
        assert_eq!(closed_form(SchemeKind::Ept, Size4K, Size1G).2, 14);
        assert_eq!(closed_form(SchemeKind::Ept, Size2M, Size2M).2, 15);
        assert_eq!(closed_form(SchemeKind::Compromis, Size4K, Size4K).2, 4);
        assert_eq!(closed_form(SchemeKind::Native, Size2M, Size1G).2, 3);
        assert_eq!(closed_form(SchemeKind::Shadow, Size2M, Size4K).2, 4);
        assert_eq!(closed_form(SchemeKind::Shadow, Size2M, Size1G).2, 3);
    }

    #[test]
    fn splitmix_is_a_fixed_function() {
        assert_eq!(splitmix(1), splitmix(1));
        assert_ne!(splitmix(1), splitmix(2));
    }
}
