//! `compromis kvm`: runs gups and pointer-chase in a real VM on `/dev/kvm` whose RAM is
//! provisioned the Compromis way, beside the same code run natively and the simulator's
//! prediction (thin glue over `compromis_vmm`).

use anyhow::Result;
use compromis_mmu::config::presets::Machine;
use compromis_types::{ByteSize, PageSize};
use compromis_vmm::memory::HostBacking;
use compromis_vmm::{Config, Workload, output};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `compromis kvm`.
#[derive(clap::Args, Debug)]
pub struct KvmArgs {
    /// Workloads, comma-separated: gups, pointer-chase.
    #[arg(long, value_delimiter = ',', default_value = "gups,pointer-chase")]
    pub workloads: Vec<Workload>,
    /// Guest page sizes, comma-separated: 4k, 2m.
    #[arg(long, value_delimiter = ',', default_value = "4k,2m", value_parser = parse_guest_page)]
    pub guest_pages: Vec<PageSize>,
    /// Host backings of guest RAM, comma-separated: 4k, thp, 2m (hugetlbfs), 1g (hugetlbfs).
    #[arg(long, value_delimiter = ',', default_value = "4k,2m,1g")]
    pub backing: Vec<HostBacking>,
    /// Data footprint, e.g. 512MiB, 1GiB (as `compromis sim --footprint`).
    #[arg(long, default_value = "256MiB")]
    pub footprint: ByteSize,
    /// Updates (gups) or nodes visited (pointer-chase) per run.
    #[arg(long, default_value_t = 100_000)]
    pub iterations: u64,
    /// Seed of the address sequences (as `compromis sim --seed`).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Watchdog budget of one guest run, in seconds.
    #[arg(long, default_value_t = 20)]
    pub budget: u64,
    /// Skip the simulator's predictions.
    #[arg(long)]
    pub no_predict: bool,
    /// Machine preset of the predictions (`compromis config --list`); zen3-milan is the closest
    /// to an AMD EPYC host.
    #[arg(long, default_value_t = Machine::default_machine())]
    pub machine: Machine,
    /// Output: table, json, csv.
    #[arg(long, default_value = "table")]
    pub output: compromis_report::Format,
    /// Results file (`-o`).
    #[command(flatten)]
    pub file: crate::OutputFile,
}

fn parse_guest_page(s: &str) -> Result<PageSize, String> {
    match s {
        "4k" => Ok(PageSize::Size4K),
        "2m" => Ok(PageSize::Size2M),
        _ => Err(format!("unknown guest page '{s}': valid values are 4k, 2m")),
    }
}

/// Runs `compromis kvm`.
pub fn run(a: &KvmArgs) -> Result<ExitCode> {
    // A signal: give the huge-page pools back before leaving (guest memory goes with the
    // process).
    crate::signals::on_signal(|| {
        compromis_vmm::restore_hugepages();
        note!("interrupted: huge-page pools restored");
    });
    let cfg = Config {
        workloads: a.workloads.clone(),
        guest_pages: a.guest_pages.clone(),
        backings: a.backing.clone(),
        footprint: a.footprint,
        iterations: a.iterations,
        seed: a.seed,
        budget: Duration::from_secs(a.budget),
        predict: !a.no_predict,
        machine: a.machine,
    };
    let progress = |line: &str| note!("kvm: {line}");
    let result = compromis_vmm::run(&cfg, &progress);
    compromis_vmm::restore_hugepages();
    let report = result?;
    let text = match a.output {
        compromis_report::Format::Table => output::text(&report),
        compromis_report::Format::Json => output::json(&report)? + "\n",
        compromis_report::Format::Csv => output::csv(&report)?,
    };
    a.file.deliver(&text)?;
    Ok(ExitCode::SUCCESS)
}
