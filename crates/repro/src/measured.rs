//! "Measured on this machine": the hardware half of the report (`compromis kvm` through
//! `compromis_vmm`), written to its own file `measured.md` because measurements differ from run
//! to run while the rest of the report is byte-identical for a seed. Without a usable `/dev/kvm`
//! the file says why the section was skipped.

use crate::ReproError;
use compromis_types::ByteSize;
use compromis_vmm::memory::HostBacking;
use compromis_vmm::{Config, output};
use std::path::{Path, PathBuf};

/// File name of the section.
pub const MEASURED_FILE: &str = "measured.md";

/// The section as Markdown: measured tables and caveats, or the note saying why it was skipped.
pub fn measured_section(quick: bool, seed: u64) -> String {
    let mut s = String::from("# Measured on this machine\n\n");
    if let Err(e) = compromis_vmm::open_kvm() {
        s += &format!("Skipped: {e}. This section needs a usable `/dev/kvm` (see docs/kvm.md).\n");
        return s;
    }
    let mut cfg = Config {
        seed,
        ..Config::default()
    };
    if quick {
        cfg.footprint = ByteSize::mib(64);
        cfg.iterations = 20_000;
        cfg.backings = vec![HostBacking::Page4K, HostBacking::Huge2M];
    }
    s += &format!(
        "`compromis kvm --footprint {} --iterations {} --backing {} --seed {seed}`: gups and pointer-chase in a real \
         VM on `/dev/kvm` (guest RAM provisioned as one extent by the memory manager), the same machine code run \
         natively, and the simulator's prediction for each configuration. Timings vary from run to run.\n\n",
        cfg.footprint,
        cfg.iterations,
        cfg.backings
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    match compromis_vmm::run(&cfg, &|_: &str| {}) {
        Ok(r) => {
            for mut t in [output::host_memory(&r), output::measurements(&r)] {
                if let Some(title) = t.title.take() {
                    s += &format!("{title}:\n\n");
                }
                s += &t.to_text();
                s += "\n";
            }
            for n in &r.notes {
                s += &format!("Note: {n}\n\n");
            }
            s += &output::caveat(&r).replace('\n', "\n\n");
        }
        Err(e) => s += &format!("The measurement failed: {e}\n"),
    }
    compromis_vmm::restore_hugepages();
    s
}

/// Writes [`MEASURED_FILE`] into `dir`.
pub fn write_measured(dir: &Path, quick: bool, seed: u64) -> Result<PathBuf, ReproError> {
    let p = dir.join(MEASURED_FILE);
    compromis_report::write_atomic(&p, measured_section(quick, seed).as_bytes())?;
    Ok(p)
}
