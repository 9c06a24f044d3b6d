//! Renders [`Results`] as the report's files.

use crate::{FragRow, ReproError, Results, RunRow};
use compromis_report::figure::FigureFormat;
use compromis_report::theme::Width;
use compromis_report::{Table, write_atomic};
use compromis_types::ByteSize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The CSV files the report writes, one per table.
pub const CSV_FILES: [&str; 9] = [
    "walk_refs.csv",
    "overheads.csv",
    "multiprocess.csv",
    "provisioning.csv",
    "fragmentation.csv",
    "claims.csv",
    "fair.csv",
    "anchors.csv",
    crate::placement::CSV_FILE,
];
/// The SVG figures the report writes.
pub const SVG_FILES: [&str; 6] = [
    "overheads_guest4k.svg",
    "overheads_guest2m.svg",
    "speedups_guest4k.svg",
    "speedups_guest2m.svg",
    "provisioning.svg",
    "fragmentation.svg",
];

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn x3(x: f64) -> String {
    format!("{x:.3}x")
}

/// Shadow paging's measured VM exits per 1,000 instructions in `r`, two decimals (`-` when
/// shadow did not run).
pub(crate) fn shadow_pki(r: &RunRow) -> String {
    r.schemes
        .iter()
        .find(|f| f.scheme == "shadow")
        .map_or_else(|| "-".to_owned(), |f| format!("{:.2}", f.exits_pki))
}

fn f2(x: f64) -> String {
    format!("{x:.2}")
}

fn mcyc(x: f64) -> String {
    format!("{:.2}", x / 1e6)
}

/// A table as GitHub markdown.
fn markdown(t: &Table) -> String {
    let esc = |c: &str| c.replace('|', "\\|");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| {} |",
        t.header
            .iter()
            .map(|h| esc(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|{}", " --- |".repeat(t.header.len()));
    for r in &t.rows {
        let _ = writeln!(
            s,
            "| {} |",
            r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    s
}

/// Section 1's table.
pub(crate) fn walk_refs_table(r: &Results) -> Table {
    let mut t = Table::new([
        "scheme",
        "guest",
        "host",
        "n",
        "m",
        "closed form",
        "caches off",
        "agrees",
        "caches on (gups)",
    ]);
    for w in &r.walk_refs {
        t.push([
            w.scheme.clone(),
            w.guest.clone(),
            w.host.clone(),
            w.n.to_string(),
            w.m.to_string(),
            w.closed_form.to_string(),
            f2(w.caches_off),
            if w.agrees {
                "yes".to_owned()
            } else {
                "NO".to_owned()
            },
            crate::compute::opt2(w.caches_on),
        ]);
    }
    t
}

const SCHEMES: [&str; 4] = ["native", "ept", "shadow", "compromis"];

fn run_table(rows: &[RunRow]) -> Table {
    let mut h = vec![
        "workload".to_owned(),
        "processes".into(),
        "guest".into(),
        "host".into(),
    ];
    h.extend(SCHEMES.iter().map(|s| format!("{s} overhead")));
    h.extend([
        "exits ept".to_owned(),
        "exits shadow".into(),
        "exits compromis".into(),
        "shadow warm-up exits".into(),
    ]);
    h.extend([
        "compromis vs ept".to_owned(),
        "shadow exits/1k instr".into(),
        "compromis vs shadow".into(),
    ]);
    let mut t = Table::new(h);
    for r in rows {
        let mut row = vec![
            r.workload.clone(),
            r.processes.to_string(),
            r.guest.clone(),
            r.host.clone(),
        ];
        for s in SCHEMES {
            row.push(
                r.schemes
                    .iter()
                    .find(|f| f.scheme == s)
                    .map_or_else(String::new, |f| pct(f.overhead)),
            );
        }
        for s in ["ept", "shadow", "compromis"] {
            row.push(
                r.schemes
                    .iter()
                    .find(|f| f.scheme == s)
                    .map_or_else(String::new, |f| f.exits.to_string()),
            );
        }
        let shadow = r.schemes.iter().find(|f| f.scheme == "shadow");
        row.push(shadow.map_or_else(String::new, |f| f.warmup_exits.to_string()));
        row.push(x3(r.speedup_vs_ept));
        row.push(shadow.map_or_else(String::new, |f| format!("{:.2}", f.exits_pki)));
        row.push(x3(r.speedup_vs_shadow));
        t.push(row);
    }
    t
}

fn mp_table(rows: &[RunRow]) -> Table {
    let mut t = Table::new([
        "workload",
        "processes",
        "host",
        "shadow CR3 exits",
        "shadow PT-write exits",
        "shadow warm-up exits",
        "ept overhead",
        "shadow overhead",
        "compromis overhead",
        "compromis vs ept",
        "shadow exits/1k instr",
        "compromis vs shadow",
    ]);
    for r in rows {
        let f = |s: &str| r.schemes.iter().find(|f| f.scheme == s);
        let ov = |s: &str| f(s).map_or_else(String::new, |f| pct(f.overhead));
        t.push([
            r.workload.clone(),
            r.processes.to_string(),
            r.host.clone(),
            f("shadow").map_or_else(String::new, |f| f.exits_cr3_load.to_string()),
            f("shadow").map_or_else(String::new, |f| f.exits_pt_write.to_string()),
            f("shadow").map_or_else(String::new, |f| f.warmup_exits.to_string()),
            ov("ept"),
            ov("shadow"),
            ov("compromis"),
            x3(r.speedup_vs_ept),
            f("shadow").map_or_else(String::new, |f| format!("{:.2}", f.exits_pki)),
            x3(r.speedup_vs_shadow),
        ]);
    }
    t
}

fn provisioning_table(r: &Results) -> Table {
    let mut t = Table::new([
        "trace",
        "fleet",
        "policy",
        "aware",
        "events",
        "placed",
        "single segment",
        "share",
        "rejected",
    ]);
    for p in &r.provisioning {
        t.push([
            p.trace.clone(),
            p.fleet.clone(),
            p.policy.clone(),
            if p.contiguity_aware {
                "yes".to_owned()
            } else {
                "no".to_owned()
            },
            p.events.to_string(),
            p.placed.to_string(),
            p.single_segment.to_string(),
            pct(p.share),
            p.rejected.to_string(),
        ]);
    }
    t
}

fn frag_table(rows: &[FragRow]) -> Table {
    let mut t = Table::new([
        "host pages",
        "fill",
        "fallback",
        "host fragmentation",
        "provisioning",
        "host extents",
        "segment sets",
        "EPT leaves 4k/2m/1g",
        "compromis fallback translations",
        "ept Mcycles",
        "compromis Mcycles",
        "compromis vs ept",
    ]);
    for f in rows {
        let mut row = vec![
            f.host_page.clone(),
            format!("{:.2}", f.fill),
            f.fallback.clone(),
        ];
        match &f.outcome {
            Ok(o) => row.extend([
                pct(o.host_fragmentation),
                o.provisioning.clone(),
                o.host_extents.to_string(),
                o.segments.to_string(),
                format!(
                    "{}/{}/{}",
                    o.ept_leaves[0], o.ept_leaves[1], o.ept_leaves[2]
                ),
                o.fallback_translations.to_string(),
                mcyc(o.ept_cycles),
                mcyc(o.compromis_cycles),
                x3(o.speedup_vs_ept),
            ]),
            Err(msg) => {
                row.push(String::new());
                row.push(format!("refused: {msg}"));
                row.extend(std::iter::repeat_n(String::new(), 7));
            }
        }
        t.push(row);
    }
    t
}

fn claims_table(r: &Results) -> Table {
    let mut t = Table::new(["paper", "ours", "explanation"]);
    for c in &r.claims {
        t.push([c.paper.clone(), c.ours.clone(), c.explanation.clone()]);
    }
    t
}

/// The report's README.md.
pub fn readme(r: &Results) -> String {
    let c = &r.config;
    let mut s = String::new();
    let _ = writeln!(s, "# Compromis: reproduction report\n");
    let _ = writeln!(
        s,
        "Generated by `compromis reproduce{} --seed {} --machine {}`. Every figure below was computed by that run; \
         the raw results are in `results.json` and one CSV per table. Same seed, same files.\n",
        if c.quick { " --quick" } else { "" },
        c.seed,
        c.machine
    );
    let _ = writeln!(
        s,
        "Settings: workloads of {} footprint and {} accesses each (the first {} are warm-up), machine preset `{}` \
         (`compromis config --machine {} --defaults` prints it; docs/machine-model.md), freshly booted guest \
         (contiguous frames), fresh host (one extent) unless stated.\n",
        ByteSize(c.footprint),
        c.accesses,
        c.warmup,
        c.machine,
        c.machine
    );

    let _ = writeln!(s, "## 1. Walk references per TLB miss\n");
    let _ = writeln!(
        s,
        "Closed form: `(n+1)(m+1)-1` for EPT (n guest levels walked, m host levels), `n` for native and \
         Compromis, and for shadow paging the levels of the smaller of the guest and host pages. \
         *Caches off*: a random-load stream over 64 MiB simulated with every TLB and walk cache disabled \
         (`MachineConfig::no_caches`). *Caches on*: the mean references per walk of the gups run of section 2 \
         with the default machine (`n/a`: that run made no walk after warm-up, the TLBs covered its footprint).\n"
    );
    let bad = r.closed_form_mismatches();
    if bad.is_empty() {
        let _ = writeln!(
            s,
            "All {} simulated caches-off values equal the closed form.\n",
            r.walk_refs.len()
        );
    } else {
        let _ = writeln!(
            s,
            "**WARNING: {} simulated caches-off value(s) DIFFER from the closed form: {}. The simulator or the closed form is wrong.**\n",
            bad.len(),
            bad.iter()
                .map(|b| format!("{} {}/{}", b.scheme, b.guest, b.host))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s.push_str(&markdown(&walk_refs_table(r)));

    let _ = writeln!(s, "\n## 2. Overhead and speedup per workload\n");
    let _ = writeln!(
        s,
        "Overhead is `cycles / cycles with a perfect TLB - 1`; speedup is `runtime(other) / runtime(compromis)`. \
         Exits are VM exits of the measured phase; *shadow warm-up exits* are shadow paging's exits before it \
         (populating a region faults each page in and the guest zeroes it, which under out-of-sync shadow paging \
         is also the hidden fault that fills the page's shadow entry), kept out of the measured run. Every speedup \
         over shadow stands beside shadow's measured VM exits per 1,000 instructions, the figure it rests on.\n"
    );
    s.push_str(&markdown(&run_table(&r.overheads)));
    let _ = writeln!(
        s,
        "\n![overheads, guest 4k](overheads_guest4k.svg)\n\n![overheads, guest 2m](overheads_guest2m.svg)\n\n\
         ![speedups, guest 4k](speedups_guest4k.svg)\n\n![speedups, guest 2m](speedups_guest2m.svg)\n"
    );
    let _ = writeln!(
        s,
        "Multi-process runs ({} processes, a context switch every {} accesses, 4 KiB guest pages): shadow paging \
         takes a VM exit on every guest CR3 load and page-table write.\n",
        c.mp_processes, c.mp_quantum
    );
    s.push_str(&markdown(&mp_table(&r.multiprocess)));
    let _ = writeln!(s, "\n### 2b. Fair comparisons: every host page size\n");
    let _ = writeln!(
        s,
        "Compromis against EPT and shadow paging with the host mapping the VM with 4 KiB, 2 MiB and 1 GiB pages \
         (the same host page for both schemes), and against EPT at the best host page the VM's contiguity allows: \
         the VM is one extent here, so 1 GiB. Each cell is the runtime ratio `runtime(other) / runtime(compromis)`, \
         with the overhead ratio `overhead(other) / overhead(compromis)` in parentheses: the two readings of the \
         paper's \"370% faster\" (4.7x). `compromis sim --compare-host-pages` prints the same for one run.\n"
    );
    s.push_str(&markdown(&crate::fair::fair_table(&r.fair)));
    if let Some(b) = r.best_vs_ept() {
        let _ = writeln!(
            s,
            "\nLargest speedup of Compromis over EPT: **{}** ({}, {} process(es), guest {} / host {}).",
            x3(b.speedup_vs_ept),
            b.workload,
            b.processes,
            b.guest,
            b.host
        );
    }
    if let Some(b) = r.best_vs_shadow() {
        let _ = writeln!(
            s,
            "Largest speedup of Compromis over shadow paging: **{}** ({}, {} process(es), guest {} / host {}; \
             shadow: {} VM exits per 1,000 instructions in the measured phase, {} exits in warm-up).",
            x3(b.speedup_vs_shadow),
            b.workload,
            b.processes,
            b.guest,
            b.host,
            shadow_pki(b),
            b.schemes
                .iter()
                .find(|f| f.scheme == "shadow")
                .map_or_else(|| "-".to_owned(), |f| f.warmup_exits.to_string())
        );
    }

    let _ = writeln!(s, "\n## 3. Single-segment provisioning\n");
    let _ = writeln!(
        s,
        "Each trace replayed on its fleet under every placement policy (fallback: up to 8 segments); the share is \
         of placed VMs given one segment (docs/placement.md).{}\n",
        match c.trace_event_limit {
            Some(n) => format!(
                " Quick mode: only the first {n} events of each trace, a synthetic trace of {} VMs.",
                c.synthetic_vms
            ),
            None => format!(
                " Whole traces; a synthetic trace of {} VMs.",
                c.synthetic_vms
            ),
        }
    );
    if !r.traces_missing.is_empty() {
        let _ = writeln!(
            s,
            "Not found in the data folder (skipped): {}.\n",
            r.traces_missing.join(", ")
        );
    }
    s.push_str(&markdown(&provisioning_table(r)));
    let _ = writeln!(s, "\n![provisioning](provisioning.svg)\n");
    s.push_str(&crate::placement::section(&r.utilisation, markdown));

    let _ = writeln!(s, "## 4. Fragmentation sensitivity\n");
    let _ = writeln!(
        s,
        "gups on a host of {}x the VM's RAM, aged by a seeded history of other VMs to each fill, largest EPT leaf {}; \
         the VM gets one extent if it can, else up to 8 segment register sets (`segments:8`, RAM beyond them \
         refused) or EPT pages from the free memory left (`ept`, Compromis then translates through its fallback).\n",
        c.frag_host_factor,
        c.frag_host_pages.join(" or ")
    );
    let _ = writeln!(
        s,
        "A `refused` row is the memory manager's answer: the VM could not be provisioned under that fallback.\n"
    );
    s.push_str(&markdown(&frag_table(&r.fragmentation)));
    let _ = writeln!(s, "\n![fragmentation](fragmentation.svg)\n");

    let _ = writeln!(s, "## 5. The paper beside us\n");
    for cl in &r.claims {
        let _ = writeln!(
            s,
            "- **Paper:** {}\n  **Ours:** {}.\n  {}\n",
            cl.paper, cl.ours, cl.explanation
        );
    }
    let _ = writeln!(
        s,
        "Caveats that apply to every figure: our workloads are synthetic, the memory-level parallelism of a \
         trace follows a stated rule (every load depends on the previous load), and the VM-exit costs are \
         assumptions (docs/machine-model.md).\n"
    );

    let _ = writeln!(s, "## 6. Anchors: ours beside hardware\n");
    let _ = writeln!(
        s,
        "Figures measured on hardware beside ours, simulated on the preset closest to the measured machine \
         (`{}`; gups, {} accesses, the footprint beside each figure). A role `calibrates` means a model parameter \
         was set from that figure (at most one may); `validates` means nothing was. \
         `compromis reproduce --anchors{}` prints this table alone.\n",
        crate::anchors::ANCHOR_MACHINE,
        r.anchors.first().map_or(0, |a| a.accesses),
        if c.quick { " --quick" } else { "" }
    );
    s.push_str(&markdown(&crate::anchors::anchors_table(&r.anchors)));
    let _ = writeln!(
        s,
        "\nThe counter behind both measured figures excludes EPT walk duration on Skylake, so \"ours\" is \
         our walk without its EPT part; the whole two-dimensional walk is beside it. The mean walk of each \
         run, part by part (cycles and references per walk; docs/machine-model.md explains each part):\n"
    );
    s.push_str(&markdown(&crate::anchors::breakdown_table(&r.anchors)));
    s
}

/// Writes the report into `dir` (created if needed): README.md, the figures, one tidy CSV per
/// table and results.json. Returns the files written, in a fixed order. Figures are SVG at page
/// width; see [`write_report_with`].
pub fn write_report(r: &Results, dir: &Path) -> Result<Vec<PathBuf>, ReproError> {
    write_report_with(r, dir, Width::Page, &[FigureFormat::Svg])
}

/// [`write_report`] with the figures at `width` in SVG (always: the README shows it) and every
/// other format of `formats`. The CSVs are tidy ([`crate::tidy_tables`]); the figures are drawn
/// from them ([`crate::figures`]), as `compromis plot` redraws them.
pub fn write_report_with(
    r: &Results,
    dir: &Path,
    width: Width,
    formats: &[FigureFormat],
) -> Result<Vec<PathBuf>, ReproError> {
    std::fs::create_dir_all(dir).map_err(|source| ReproError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, t) in crate::tidy_tables(r) {
        files.push((name.to_owned(), t.to_csv()?.into_bytes()));
    }
    for (name, t) in [
        (CSV_FILES[5], claims_table(r)),
        (CSV_FILES[6], crate::fair::fair_csv(&r.fair)),
        (CSV_FILES[7], crate::anchors::anchors_csv(&r.anchors)),
        (CSV_FILES[8], crate::placement::csv_table(&r.utilisation)),
    ] {
        files.push((name.to_owned(), t.to_csv()?.into_bytes()));
    }
    files.push((
        crate::placement::SVG_FILE.to_owned(),
        crate::placement::svg(&r.utilisation)?.into_bytes(),
    ));
    let mut json = serde_json::to_string_pretty(r).map_err(compromis_report::ReportError::Json)?;
    json.push('\n');
    files.push(("results.json".to_owned(), json.into_bytes()));
    files.push(("README.md".to_owned(), readme(r).into_bytes()));
    let mut written = Vec::new();
    for (name, bytes) in files {
        let p = dir.join(name);
        write_atomic(&p, &bytes)?;
        written.push(p);
    }
    let mut formats = compromis_report::figure::formats_or_svg(formats);
    if !formats.contains(&FigureFormat::Svg) {
        formats.insert(0, FigureFormat::Svg);
    }
    written.extend(crate::write_figures(
        &crate::Tidy::from_results(r),
        dir,
        width,
        &formats,
    )?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Claim, FragOutcome, ProvisioningRow, RunConfig, WalkRefRow};

    fn results(agrees: bool) -> Results {
        Results {
            config: RunConfig {
                machine: "skylake-sp".into(),
                quick: true,
                seed: 1,
                footprint: 1 << 20,
                accesses: 10,
                warmup: 5,
                mp_processes: 4,
                mp_quantum: 2,
                trace_event_limit: None,
                synthetic_vms: 3,
                frag_workload: "gups".into(),
                frag_host_pages: vec!["2m".into()],
                frag_host_factor: 16,
            },
            fair: vec![],
            anchors: vec![],
            walk_refs: vec![WalkRefRow {
                scheme: "ept".into(),
                guest: "4k".into(),
                host: "4k".into(),
                n: 4,
                m: 4,
                closed_form: 24,
                walks_off: 2,
                refs_off: if agrees { 48 } else { 47 },
                caches_off: if agrees { 24.0 } else { 23.5 },
                agrees,
                caches_on: None,
            }],
            overheads: vec![RunRow {
                workload: "gups".into(),
                processes: 1,
                guest: "4k".into(),
                host: "4k".into(),
                ideal_cycles: 100.0,
                // Hand-made: EPT 300 cycles, Compromis 200 -> 1.5x.
                schemes: vec![
                    crate::SchemeFigures::for_tests("native", 150.0),
                    crate::SchemeFigures::for_tests("ept", 300.0),
                    crate::SchemeFigures::for_tests("shadow", 250.0),
                    crate::SchemeFigures::for_tests("compromis", 200.0),
                ],
                speedup_vs_ept: 1.5,
                speedup_vs_shadow: 1.25,
            }],
            multiprocess: Vec::new(),
            provisioning: vec![ProvisioningRow {
                trace: "synthetic".into(),
                fleet: "1x1GiB/1c".into(),
                policy: "first-fit".into(),
                contiguity_aware: false,
                events: 4,
                placed: 2,
                single_segment: 1,
                share: 0.5,
                rejected: 0,
            }],
            traces_missing: vec!["azure-v1-rnn".into()],
            utilisation: Vec::new(),
            fragmentation: vec![
                FragRow {
                    host_page: "2m".into(),
                    fill: 0.5,
                    fallback: "ept".into(),
                    outcome: Ok(FragOutcome {
                        host_fragmentation: 0.25,
                        provisioning: "ept".into(),
                        host_extents: 3,
                        segments: 0,
                        ept_leaves: [1, 2, 0],
                        fallback_translations: 7,
                        ept_cycles: 2e6,
                        compromis_cycles: 1e6,
                        speedup_vs_ept: 2.0,
                    }),
                },
                FragRow {
                    host_page: "1g".into(),
                    fill: 0.9,
                    fallback: "segments:8".into(),
                    outcome: Err("no room".into()),
                },
            ],
            claims: vec![Claim {
                paper: "p | q".into(),
                ours: "o".into(),
                explanation: "e".into(),
            }],
        }
    }

    #[test]
    fn readme_shows_hand_made_figures() {
        let md = readme(&results(true));
        assert!(md.contains("All 1 simulated caches-off values equal the closed form."));
        assert!(md.contains("| ept | 4k | 4k | 4 | 4 | 24 | 24.00 | yes | n/a |"));
        assert!(md.contains("Largest speedup of Compromis over EPT: **1.500x** (gups"));
        assert!(md.contains("| 50.00% |"));
        assert!(md.contains(
            "| 2m | 0.50 | ept | 25.00% | ept | 3 | 0 | 1/2/0 | 7 | 2.00 | 1.00 | 2.000x |"
        ));
        assert!(md.contains("refused: no room"));
        assert!(md.contains("Not found in the data folder (skipped): azure-v1-rnn."));
        assert!(!md.contains("WARNING"));
    }

    #[test]
    fn a_closed_form_mismatch_is_loud() {
        let md = readme(&results(false));
        assert!(md.contains(
            "**WARNING: 1 simulated caches-off value(s) DIFFER from the closed form: ept 4k/4k."
        ));
        assert!(md.contains("| 23.50 | NO |"));
    }

    #[test]
    fn markdown_escapes_pipes_and_has_one_row_per_table_row() {
        let md = markdown(&claims_table(&results(true)));
        assert_eq!(md.lines().count(), 3);
        assert!(md.contains("p \\| q"));
    }

    #[test]
    fn report_files_are_written_and_identical_twice() {
        let dir = tempfile::tempdir().unwrap();
        let r = results(true);
        let a = write_report(&r, &dir.path().join("a")).unwrap();
        let b = write_report(&r, &dir.path().join("b")).unwrap();
        assert_eq!(a.len(), CSV_FILES.len() + SVG_FILES.len() + 3);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                std::fs::read(x).unwrap(),
                std::fs::read(y).unwrap(),
                "{}",
                x.display()
            );
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("a/results.json")).unwrap())
                .unwrap();
        assert_eq!(json["overheads"][0]["speedup_vs_ept"], 1.5);
        assert!(write_report(&r, &dir.path().join("a/README.md/x")).is_err());
    }
}
