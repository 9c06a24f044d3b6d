//! The results of an experiment as tables (one row per metric, one column per scheme).

use crate::Outcome;
use compromis_mmu::ExitCause;
use compromis_report::{Table, thousands};

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// The per-scheme results table: metrics as rows, schemes as columns.
pub fn results(o: &Outcome) -> Table {
    let mut t = Table::new(
        std::iter::once("metric".to_owned())
            .chain(o.schemes.iter().map(|s| s.result.scheme.to_string())),
    );
    let row = |t: &mut Table, name: &str, f: &dyn Fn(&crate::SchemeOutcome) -> String| {
        t.push(std::iter::once(name.to_owned()).chain(o.schemes.iter().map(f)));
    };
    row(&mut t, "accesses", &|s| {
        thousands(s.result.measured.accesses)
    });
    row(&mut t, "instructions", &|s| {
        thousands(s.result.measured.instructions)
    });
    row(&mut t, "L1 TLB miss rate", &|s| pct(s.derived.l1_miss_rate));
    row(&mut t, "STLB hits", &|s| {
        thousands(s.result.measured.stlb_hits)
    });
    row(&mut t, "STLB misses (walks)", &|s| {
        thousands(s.result.measured.stlb_misses)
    });
    row(&mut t, "STLB MPKI", &|s| {
        format!("{:.2}", s.derived.stlb_mpki)
    });
    row(&mut t, "refs/walk", &|s| {
        format!("{:.2}", s.derived.refs_per_walk)
    });
    row(&mut t, "  guest refs/walk", &|s| {
        format!("{:.2}", s.derived.guest_refs_per_walk)
    });
    row(&mut t, "  host refs/walk", &|s| {
        format!("{:.2}", s.derived.host_refs_per_walk)
    });
    row(&mut t, "PWC hits", &|s| {
        thousands(s.result.measured.pwc_hits)
    });
    row(&mut t, "nested TLB hits", &|s| {
        thousands(s.result.measured.ntlb_hits)
    });
    row(&mut t, "nested TLB misses", &|s| {
        thousands(s.result.measured.ntlb_misses)
    });
    row(&mut t, "host PWC hits", &|s| {
        thousands(s.result.measured.host_pwc_hits)
    });
    row(&mut t, "segment translations", &|s| {
        thousands(s.result.measured.segment_translations)
    });
    row(&mut t, "fallback translations", &|s| {
        thousands(s.result.measured.fallback_translations)
    });
    for c in ExitCause::ALL {
        row(&mut t, &format!("exits: {}", c.name()), &|s| {
            thousands(s.result.measured.exits.get(c))
        });
    }
    row(&mut t, "exits per 1k instr", &|s| {
        format!("{:.3}", s.derived.exits_pki)
    });
    row(&mut t, "shadow entries resynced", &|s| {
        thousands(s.result.measured.resynced)
    });
    row(&mut t, "page faults", &|s| {
        thousands(s.result.measured.page_faults)
    });
    row(&mut t, "page faults (warm-up)", &|s| {
        thousands(s.result.warmup.page_faults)
    });
    row(&mut t, "exits (warm-up, incl. populate)", &|s| {
        thousands(s.result.warmup.exits.total())
    });
    row(&mut t, "context switches", &|s| {
        thousands(s.result.measured.context_switches)
    });
    row(&mut t, "TLB flushes", &|s| {
        thousands(s.result.measured.tlb_flushes)
    });
    t
}

fn mcycles(x: f64) -> String {
    format!("{:.2}", x / 1e6)
}

/// The cycle account: one row per component (millions of cycles), plus overheads and speedups.
pub fn cycles(o: &Outcome) -> Table {
    let mut t = Table::new(
        std::iter::once("Mcycles".to_owned())
            .chain(o.schemes.iter().map(|s| s.result.scheme.to_string())),
    );
    let row = |t: &mut Table, name: &str, f: &dyn Fn(&crate::SchemeOutcome) -> String| {
        t.push(std::iter::once(name.to_owned()).chain(o.schemes.iter().map(f)));
    };
    row(&mut t, "ideal (perfect TLB)", &|s| mcycles(s.cycles.ideal));
    row(&mut t, "base (instr x CPI)", &|s| mcycles(s.cycles.base));
    row(&mut t, "data accesses", &|s| mcycles(s.cycles.data));
    row(&mut t, "STLB hits", &|s| mcycles(s.cycles.stlb));
    row(&mut t, "page walks", &|s| mcycles(s.cycles.walks));
    row(&mut t, "hidden by overlap", &|s| mcycles(-s.cycles.overlap));
    row(&mut t, "memory (overlapped)", &|s| mcycles(s.cycles.memory));
    row(&mut t, "VM exits", &|s| mcycles(s.cycles.exits));
    row(&mut t, "translation (STLB+walks+exits)", &|s| {
        mcycles(s.cycles.translation)
    });
    row(&mut t, "guest page faults (also ideal)", &|s| {
        mcycles(s.cycles.faults)
    });
    row(&mut t, "total", &|s| mcycles(s.cycles.total));
    row(&mut t, "overhead vs ideal", &|s| pct(s.cycles.overhead));
    row(&mut t, "avg walk latency (cycles)", &|s| {
        format!("{:.1}", s.cycles.walk_latency)
    });
    let lv = |s: &crate::SchemeOutcome, i: usize| {
        let m = &s.result.measured;
        pct(compromis_mmu::stats::ratio(
            m.walk_ref_levels[i],
            m.walk_ref_levels.iter().sum(),
        ))
    };
    row(&mut t, "walk refs from L1D", &|s| lv(s, 0));
    row(&mut t, "walk refs from L2", &|s| lv(s, 1));
    row(&mut t, "walk refs from LLC", &|s| lv(s, 2));
    row(&mut t, "walk refs from DRAM", &|s| lv(s, 3));
    if let Some(sh) = &o.over_shadow {
        let name = format!(
            "speedup over shadow ({} sync, {:.2} exits/1k instr)",
            sh.sync, sh.shadow_exits_pki
        );
        row(&mut t, &name, &|s| {
            sh.speedup
                .get(&s.result.scheme)
                .map_or_else(String::new, |x| format!("{x:.3}x"))
        });
    }
    if o.scheme(compromis_mmu::SchemeKind::Compromis).is_some() {
        row(&mut t, "speedup of compromis", &|s| {
            o.speedup(compromis_mmu::SchemeKind::Compromis, s.result.scheme)
                .map_or_else(String::new, |x| format!("{x:.3}x"))
        });
    }
    t
}

/// The walk-length histogram: one row per reference count seen, one column per scheme.
pub fn walk_histogram(o: &Outcome) -> Table {
    let mut t = Table::new(
        std::iter::once("refs".to_owned())
            .chain(o.schemes.iter().map(|s| s.result.scheme.to_string())),
    );
    let n = compromis_mmu::stats::WALK_HIST_BUCKETS;
    for b in 0..n {
        if o.schemes.iter().any(|s| s.result.measured.walk_hist[b] > 0) {
            let label = if b == n - 1 {
                format!("{b}+")
            } else {
                b.to_string()
            };
            t.push(
                std::iter::once(label).chain(
                    o.schemes
                        .iter()
                        .map(|s| thousands(s.result.measured.walk_hist[b])),
                ),
            );
        }
    }
    t
}

/// Scheme-per-row table for CSV output.
pub fn csv_rows(o: &Outcome) -> Table {
    let mut t = Table::new([
        "source",
        "scheme",
        "accesses",
        "instructions",
        "l1_hits",
        "l1_misses",
        "stlb_hits",
        "stlb_misses",
        "walks",
        "walk_refs_guest",
        "walk_refs_host",
        "refs_per_walk",
        "pwc_hits",
        "ntlb_hits",
        "ntlb_misses",
        "host_pwc_hits",
        "segment_translations",
        "fallback_translations",
        "exits_pt_write",
        "exits_cr3_load",
        "exits_page_fault",
        "exits_invlpg",
        "exits_unsync",
        "resynced",
        "page_faults",
        "warmup_page_faults",
        "warmup_exits",
        "context_switches",
        "tlb_flushes",
        "walk_cycles",
        "data_cycles",
        "mem_cycles",
        "fault_cycles",
        "translation_cycles",
        "total_cycles",
        "ideal_cycles",
        "overhead",
        "avg_walk_latency",
        "shadow_sync",
        "shadow_exits_pki",
        "speedup_over_shadow",
    ]);
    let sh = o.over_shadow.as_ref();
    for s in &o.schemes {
        let m = &s.result.measured;
        t.push([
            o.source.clone(),
            s.result.scheme.to_string(),
            m.accesses.to_string(),
            m.instructions.to_string(),
            m.l1_hits.to_string(),
            m.l1_misses.to_string(),
            m.stlb_hits.to_string(),
            m.stlb_misses.to_string(),
            m.walks.to_string(),
            m.walk_refs_guest.to_string(),
            m.walk_refs_host.to_string(),
            format!("{:.4}", s.derived.refs_per_walk),
            m.pwc_hits.to_string(),
            m.ntlb_hits.to_string(),
            m.ntlb_misses.to_string(),
            m.host_pwc_hits.to_string(),
            m.segment_translations.to_string(),
            m.fallback_translations.to_string(),
            m.exits.pt_write.to_string(),
            m.exits.cr3_load.to_string(),
            m.exits.page_fault.to_string(),
            m.exits.invlpg.to_string(),
            m.exits.unsync.to_string(),
            m.resynced.to_string(),
            m.page_faults.to_string(),
            s.result.warmup.page_faults.to_string(),
            s.result.warmup.exits.total().to_string(),
            m.context_switches.to_string(),
            m.tlb_flushes.to_string(),
            m.walk_cycles.to_string(),
            m.data_cycles.to_string(),
            m.mem_cycles.to_string(),
            format!("{:.0}", s.cycles.faults),
            format!("{:.0}", s.cycles.translation),
            format!("{:.0}", s.cycles.total),
            format!("{:.0}", s.cycles.ideal),
            format!("{:.6}", s.cycles.overhead),
            format!("{:.2}", s.cycles.walk_latency),
            sh.map_or_else(String::new, |x| x.sync.to_string()),
            sh.map_or_else(String::new, |x| format!("{:.4}", x.shadow_exits_pki)),
            sh.and_then(|x| x.speedup.get(&s.result.scheme))
                .map_or_else(String::new, |x| format!("{x:.6}")),
        ]);
    }
    t
}
