//! The simulator's prediction for a measured configuration, through the `compromis_sim` library
//! (the one place this crate touches the simulator, so an API move changes only this file).
//!
//! The machine model is a machine preset (`compromis kvm --machine`, by default
//! `compromis_mmu::config::presets::DEFAULT_MACHINE`); the output labels the model it used.

use crate::Workload;
use crate::sequence;
use compromis_mmu::SchemeKind;
use compromis_mmu::config::presets::Machine;
use compromis_sim::{ExperimentRequest, Source};
use compromis_types::{ByteSize, PageSize};
use compromis_vmem::GuestConfig;
use serde::Serialize;

/// Label of the machine model used for predictions.
pub fn machine_label(machine: Machine) -> String {
    if machine == Machine::default_machine() {
        format!("machine preset {machine} (the default)")
    } else {
        format!("machine preset {machine}")
    }
}

/// Predicted slowdowns over native for one configuration.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Prediction {
    /// Nested paging (what KVM does): total cycles of `ept` / `native`.
    pub ept: f64,
    /// The Compromis MMU on the same VM: total cycles of `compromis` / `native`.
    pub compromis: f64,
}

/// Simulates `iterations` updates/nodes of `w` (the same stream the hardware ran) with
/// `guest_page` guest pages on a host mapping the VM with `host_page` pages, on `machine`.
pub fn predict(
    machine: Machine,
    w: Workload,
    footprint: ByteSize,
    iterations: u64,
    seed: u64,
    guest_page: PageSize,
    host_page: PageSize,
) -> Result<Prediction, String> {
    let spec = sequence::spec(w.kind(), footprint, iterations, seed);
    // The builder sets the VM size and the warm-up as `compromis sim` does.
    let plan = ExperimentRequest {
        source: Source::Workload {
            kind: spec.kind,
            footprint: Some(spec.footprint),
            accesses: Some(spec.accesses),
            processes: Some(spec.processes),
            quantum: Some(spec.quantum),
        },
        schemes: vec![SchemeKind::Native, SchemeKind::Ept, SchemeKind::Compromis],
        guest: GuestConfig {
            page: guest_page,
            ..GuestConfig::default()
        },
        host_page,
        seed,
        machine: machine.config().map_err(|e| e.to_string())?,
        ..ExperimentRequest::default()
    }
    .build()
    .map_err(|e| e.to_string())?;
    let o = compromis_sim::run(&plan, &|_| {}).map_err(|e| e.to_string())?;
    let total = |k| o.scheme(k).map(|s| s.cycles.total).unwrap_or(f64::NAN);
    let native = total(SchemeKind::Native);
    Ok(Prediction {
        ept: total(SchemeKind::Ept) / native,
        compromis: total(SchemeKind::Compromis) / native,
    })
}

#[cfg(test)]
mod tests {
    use compromis_mmu::config::presets::Machine;

    #[test]
    fn the_label_names_the_preset() {
        let default = super::machine_label(Machine::default_machine());
        assert!(default.contains(compromis_mmu::config::presets::DEFAULT_MACHINE));
        assert!(default.ends_with("(the default)"));
        let zen: Machine = "zen3-milan".parse().unwrap();
        assert_eq!(super::machine_label(zen), "machine preset zen3-milan");
    }
}
