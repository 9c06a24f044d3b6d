//! Simulations with no work repeated: a run that is provably the same at several host page sizes
//! is simulated once and shared, and a perfect-TLB baseline that no figure reads is not run.
//!
//! A *pass* is one simulation of a workload on one VM, through some schemes, with or without the
//! perfect-TLB baseline. [`host_rows`] computes the rows of one workload and guest page at several
//! host page sizes from as few passes as these facts allow:
//!
//! - **Native** translation never looks at the host (guest-physical addresses are its physical
//!   ones): it is simulated at the first host page only.
//! - **The perfect-TLB baseline** translates through the backing's gPA -> hPA map only (the EPT
//!   walker's side-effect-free probe: no walk, no walk cache, no statistic of the walker) and
//!   sends the data accesses to the caches at those host-physical addresses. Two VMs with the same
//!   guest layout and the same map (the same runs) give the same baseline whatever their host page
//!   size (which only sets the EPT's leaf sizes): it is run once.
//! - **Compromis** translates every gPA inside a segment by the segment (no reference) and only
//!   the others through the EPT (its fallback). When the segments cover all of RAM the fallback is
//!   never taken, so with the same layout, runs and segments Compromis is the same at every host
//!   page size: it is run once.
//!
//! EPT and shadow paging depend on the host page (EPT leaves, shadow leaves of at most the host
//! page) and are simulated at each. Whether two VMs have the same layout, runs and segments is
//! checked on the VMs built for the run ([`same_map`]), not assumed: on the default machine the
//! 4 KiB and 2 MiB hosts share, the 1 GiB host (whose RAM is placed otherwise) does not.

use crate::{ReproError, RunRow};
use compromis_mmu::{MachineConfig, SchemeKind, Stats};
use compromis_sim::{
    BaselineResult, CycleAccount, ExperimentError, Input, Plan, SchemeResult, SimResults, VmInfo,
};
use compromis_types::PageSize;
use compromis_vmem::Backing;
use compromis_workload::WorkloadSpec;
use rayon::prelude::*;
use std::sync::Arc;

/// A planned workload run with its VM built.
pub(crate) struct Vm {
    plan: Plan,
    spec: WorkloadSpec,
    backing: Arc<Backing>,
    /// What the hypervisor gave the VM.
    pub(crate) info: VmInfo,
}

impl Vm {
    /// Builds the VM of `plan`, whose input must be a workload.
    pub(crate) fn build(plan: Plan) -> Result<Vm, ExperimentError> {
        let spec = match &plan.input {
            Input::Workload(w) => *w,
            Input::Trace { path, .. } => {
                return Err(ExperimentError::NoStream(path.display().to_string()));
            }
            Input::Stream { name } => return Err(ExperimentError::NoStream(name.clone())),
        };
        compromis_sim::check_fits(&spec, plan.experiment.vm.ram)?;
        let (backing, info) = compromis_sim::build_vm(&plan.experiment.vm)?;
        Ok(Vm {
            plan,
            spec,
            backing,
            info,
        })
    }

    /// One pass of the workload through `schemes` (in that order), with the perfect-TLB
    /// baseline if `baseline`.
    pub(crate) fn simulate(
        &self,
        schemes: &[SchemeKind],
        baseline: bool,
    ) -> Result<SimResults, ExperimentError> {
        let mut sim = self.plan.experiment.sim.clone();
        sim.schemes = schemes.to_vec();
        sim.baseline = baseline;
        let ops = compromis_workload::build(&self.spec)?;
        Ok(compromis_sim::simulate(
            &sim,
            &self.backing,
            ops.map(Ok::<_, std::convert::Infallible>),
            &|_| {},
        )?)
    }

    /// The machine the VM's runs are costed on.
    pub(crate) fn machine(&self) -> &MachineConfig {
        &self.plan.experiment.sim.machine
    }
}

/// Whether `a` and `b` give every gPA the same host-physical address and the same segment: the
/// same guest layout, runs and segment register sets (their host page sizes may differ).
pub(crate) fn same_map(a: &Backing, b: &Backing) -> bool {
    a.layout() == b.layout() && a.runs() == b.runs() && a.segments() == b.segments()
}

/// Whether the segments cover all of the VM's RAM (Compromis then never takes its EPT fallback).
fn segments_cover_ram(info: &VmInfo) -> bool {
    info.segment_bytes == info.ram
}

/// The cycle model's total for a run's counters `s` on machine `m`. The total is the run's own
/// account (instructions, memory timeline, exits, faults); only the overhead reads the baseline,
/// so a run whose overhead is not reported needs no baseline.
pub(crate) fn total_cycles(s: &Stats, m: &MachineConfig) -> f64 {
    CycleAccount::of(s, s, m).total
}

/// What one host page's row takes from which pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Its own pass.
    Own,
    /// The first host page's pass (the run is the same there).
    First,
}

/// The passes of one row: the schemes its own pass simulates, and where its baseline and its
/// Compromis run come from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RowPlan {
    schemes: Vec<SchemeKind>,
    baseline: Pass,
    compromis: Pass,
}

/// The row plans for host pages whose VMs are `vms` (the first simulates native, and everything
/// it shares): `shares[i]` says whether VM `i` has the first VM's map, `covered[i]` whether its
/// segments cover its RAM.
fn row_plans(shares: &[bool], covered: &[bool]) -> Vec<RowPlan> {
    shares
        .iter()
        .zip(covered)
        .enumerate()
        .map(|(i, (&share, &cov))| {
            if i == 0 {
                return RowPlan {
                    schemes: SchemeKind::ALL.to_vec(),
                    baseline: Pass::Own,
                    compromis: Pass::Own,
                };
            }
            let compromis = if share && cov && covered[0] {
                Pass::First
            } else {
                Pass::Own
            };
            let mut schemes = vec![SchemeKind::Ept, SchemeKind::Shadow];
            if compromis == Pass::Own {
                schemes.push(SchemeKind::Compromis);
            }
            RowPlan {
                schemes,
                baseline: if share { Pass::First } else { Pass::Own },
                compromis,
            }
        })
        .collect()
}

/// The rows of workload `spec` at guest page `guest` and each of `hosts` (the first host page
/// first), from plans `plan_of(host)`, with every provably repeated run simulated once.
/// `step` is called after each pass.
pub(crate) fn host_rows(
    spec: &WorkloadSpec,
    guest: PageSize,
    hosts: &[PageSize],
    plan_of: &(dyn Fn(PageSize) -> Result<Plan, ExperimentError> + Sync),
    step: &(dyn Fn() + Sync),
) -> Result<Vec<RunRow>, ReproError> {
    let config = |host: PageSize| {
        move || {
            format!(
                "{} x{} guest {guest} host {host}",
                spec.kind, spec.processes
            )
        }
    };
    let failed = |host: PageSize| {
        move |source| ReproError::Experiment {
            config: config(host)(),
            source,
        }
    };
    let vms: Vec<Vm> = hosts
        .par_iter()
        .map(|&host| plan_of(host).and_then(Vm::build).map_err(failed(host)))
        .collect::<Result<_, _>>()?;
    let shares: Vec<bool> = vms
        .iter()
        .map(|v| same_map(&vms[0].backing, &v.backing))
        .collect();
    let covered: Vec<bool> = vms.iter().map(|v| segments_cover_ram(&v.info)).collect();
    let plans = row_plans(&shares, &covered);
    let passes: Vec<SimResults> = vms
        .par_iter()
        .zip(&plans)
        .zip(hosts)
        .map(|((vm, p), &host)| {
            let r = vm
                .simulate(&p.schemes, p.baseline == Pass::Own)
                .map_err(failed(host));
            step();
            r
        })
        .collect::<Result<_, _>>()?;
    let first = &passes[0];
    let scheme = |pass: &SimResults, k: SchemeKind| -> Option<SchemeResult> {
        pass.schemes.iter().find(|r| r.scheme == k).cloned()
    };
    let mut rows = Vec::with_capacity(hosts.len());
    for (((vm, p), pass), &host) in vms.iter().zip(&plans).zip(&passes).zip(hosts) {
        let ideal: Option<BaselineResult> = match p.baseline {
            Pass::Own => pass.baseline.clone(),
            Pass::First => first.baseline.clone(),
        };
        let ideal =
            ideal.ok_or_else(|| failed(host)(compromis_sim::EngineError::NoBaseline.into()))?;
        let schemes: Vec<SchemeResult> = SchemeKind::ALL
            .iter()
            .filter_map(|&k| match k {
                SchemeKind::Native => scheme(first, k),
                SchemeKind::Compromis if p.compromis == Pass::First => scheme(first, k),
                _ => scheme(pass, k),
            })
            .collect();
        let o = compromis_sim::outcome_of(
            vm.machine(),
            spec.kind.name(),
            vm.info.clone(),
            schemes,
            ideal,
        );
        rows.push(crate::compute::run_row(&o, spec, guest, host));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_mmu::config::presets::Machine;
    use compromis_sim::{ExperimentRequest, Source};
    use compromis_vmem::GuestConfig;
    use compromis_workload::WorkloadKind;

    const HOSTS: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

    fn plan(spec: &WorkloadSpec, guest: PageSize, host: PageSize) -> Result<Plan, ExperimentError> {
        ExperimentRequest {
            source: Source::Workload {
                kind: spec.kind,
                footprint: Some(spec.footprint),
                accesses: Some(spec.accesses),
                processes: Some(spec.processes),
                quantum: Some(spec.quantum),
            },
            machine: Machine::default_machine().config().expect("preset"),
            schemes: SchemeKind::ALL.to_vec(),
            guest: GuestConfig {
                page: guest,
                ..GuestConfig::default()
            },
            host_page: host,
            seed: spec.seed,
            ..ExperimentRequest::default()
        }
        .build()
    }

    /// The oracle: every scheme and the baseline simulated at every host page, nothing shared.
    #[test]
    fn shared_runs_give_the_rows_of_separate_runs() {
        let mut shared = 0;
        for (kind, processes) in [(WorkloadKind::Gups, 1), (WorkloadKind::Churn, 2)] {
            for guest in [PageSize::Size4K, PageSize::Size2M] {
                let spec = WorkloadSpec {
                    kind,
                    footprint: compromis_types::ByteSize::mib(32),
                    accesses: 20_000,
                    processes,
                    quantum: 2_500,
                    seed: 7,
                };
                let rows = host_rows(&spec, guest, &HOSTS, &|h| plan(&spec, guest, h), &|| {})
                    .expect("runs");
                for (row, host) in rows.iter().zip(HOSTS) {
                    let p = plan(&spec, guest, host).expect("plan");
                    let o = compromis_sim::run(&p, &|_| {}).expect("runs");
                    let want = crate::compute::run_row(&o, &spec, guest, host);
                    assert_eq!(row, &want, "{kind} guest {guest} host {host}");
                }
                let vm = |h| Vm::build(plan(&spec, guest, h).expect("plan")).expect("vm");
                if same_map(&vm(HOSTS[0]).backing, &vm(HOSTS[1]).backing) {
                    shared += 1;
                }
            }
        }
        // The 4 KiB and 2 MiB hosts do share here: the test saw sharing, not only its absence.
        assert_eq!(shared, 4);
    }

    #[test]
    fn only_what_is_shared_is_left_out() {
        let plans = row_plans(&[true, true, false], &[true, true, true]);
        assert_eq!(plans[0].schemes, SchemeKind::ALL.to_vec());
        assert_eq!(plans[0].baseline, Pass::Own);
        // Same map, segments over all RAM: baseline and Compromis from the first pass.
        assert_eq!(plans[1].schemes, vec![SchemeKind::Ept, SchemeKind::Shadow]);
        assert_eq!(
            (plans[1].baseline, plans[1].compromis),
            (Pass::First, Pass::First)
        );
        // Another map: its own baseline and Compromis.
        assert_eq!(
            plans[2].schemes,
            vec![SchemeKind::Ept, SchemeKind::Shadow, SchemeKind::Compromis]
        );
        assert_eq!(
            (plans[2].baseline, plans[2].compromis),
            (Pass::Own, Pass::Own)
        );
        // Same map but RAM outside the segments: Compromis may take the EPT fallback.
        let plans = row_plans(&[true, true], &[false, false]);
        assert_eq!(
            (plans[1].baseline, plans[1].compromis),
            (Pass::First, Pass::Own)
        );
    }
}
