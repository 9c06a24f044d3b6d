//! Printers of a [`Report`]: text tables with the nested-virtualization caveat, CSV, JSON. They
//! only read the report.

use crate::Report;
use compromis_report::Table;
use compromis_types::ByteSize;

fn f2(x: f64) -> String {
    format!("{x:.2}")
}

fn fx(x: f64) -> String {
    format!("{x:.3}x")
}

/// The measurement table: per workload x guest page x host backing.
pub fn measurements(r: &Report) -> Table {
    let mut t = Table::new([
        "workload",
        "guest pages",
        "host backing",
        "native ns/access",
        "VM ns/access",
        "VM slowdown",
        "predicted NPT slowdown",
        "predicted Compromis slowdown",
        "checksum",
    ])
    .with_title(format!(
        "Measured on this machine: {} iterations over {} (seed {}); predictions: {}",
        r.iterations,
        ByteSize(r.footprint),
        r.seed,
        r.machine_model
    ));
    for row in &r.rows {
        let (pe, pc) = row
            .predicted
            .map_or(("-".into(), "-".into()), |p| (fx(p.ept), fx(p.compromis)));
        t.push([
            row.workload.name().to_owned(),
            row.guest_page.name().to_owned(),
            row.backing.name().to_owned(),
            format!("{} ({})", f2(row.native.ns_per_access), row.native_backing),
            f2(row.vm.ns_per_access),
            fx(row.slowdown),
            pe,
            pc,
            format!("{:#x} ok", row.vm.checksum),
        ]);
    }
    t
}

/// The host-memory table: per backing, the extents found and the register sets.
pub fn host_memory(r: &Report) -> Table {
    let mut t = Table::new([
        "host backing",
        "guest RAM",
        "memory manager (model)",
        "extents found",
        "extent sizes",
        "one segment",
        "BASE / LIMIT / OFFSET",
    ])
    .with_title("Guest RAM in host-physical memory (from /proc/self/pagemap)");
    for h in &r.hosts {
        let sizes: Vec<String> = h
            .extent_sizes
            .iter()
            .take(4)
            .map(|(b, n)| format!("{n} x {}", ByteSize(*b)))
            .collect();
        let more = if h.extent_sizes.len() > 4 {
            ", ..."
        } else {
            ""
        };
        let regs = if h.registers.is_empty() {
            format!("none: {}", h.reason)
        } else {
            h.registers
                .iter()
                .map(|s| format!("{:#x} / {:#x} / {:#x}", s.base.0, s.limit.0, s.offset()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        t.push([
            h.backing.name().to_owned(),
            ByteSize(h.ram).to_string(),
            h.model.clone(),
            h.extents.to_string(),
            format!("{}{more}", sizes.join(", ")),
            if h.one_segment { "yes" } else { "no" }.to_owned(),
            regs,
        ]);
    }
    t
}

/// The caveat about nested virtualization and timing, as text.
pub fn caveat(r: &Report) -> String {
    let mut s = String::new();
    s += &format!(
        "CPU: {} (TSC {:.3} GHz){}\n",
        r.cpu,
        f64::from(r.tsc_khz) / 1e6,
        if r.nested {
            "; this machine is itself a VM (CPUID hypervisor flag)"
        } else {
            ""
        }
    );
    let c = &r.calibration;
    s += &format!(
        "Instruction-rate check: a register-only loop takes {:.2} ns per iteration natively and {:.2} ns in the VM ({:.1}x).\n",
        c.native_ns, c.vm_ns, c.ratio
    );
    if c.ratio > crate::EMULATION_RATIO {
        s += &format!(
            "WARNING: the guest does not run on the hardware here ({}): the hypervisor emulates or single-steps it, \
so every VM time above measures that, not address translation, and the VM slowdowns cannot be compared with \
the simulator's predictions. On a host with hardware virtualization (SVM/VMX, bare metal or nested) the same \
command measures the 2D walk.\n",
            if r.pvm {
                "/dev/kvm is served by kvm_pvm, PVM's software virtualization, as this VM has no SVM/VMX"
            } else {
                "slow vCPU"
            }
        );
    }
    if r.pvm {
        s += "Virtualization here: /dev/kvm is PVM (the kvm_pvm module), software virtualization for VMs whose \
CPU offers no SVM/VMX. PVM keeps a shadow page table (gVA -> this VM's physical) built by the hypervisor, over the \
outer hypervisor's nested table: there is no nested (2D) walk of our guest table to measure, and the backing page \
size of our guest RAM only changes the shadow's leaf size. The 'native' baseline is itself a guest of the outer \
hypervisor (a 2D walk over its NPT); pagemap frames are this VM's guest-physical frames, not DRAM addresses, so \
'one segment' means contiguous in this VM's physical memory.\n";
    } else if r.nested {
        s += "Nested virtualization caveat: our guest is an L2 guest. Its 2D walk runs over the outer \
hypervisor's shadow of our nested page table (guest table x shadow NPT), and the shadow's page size is \
min(our backing page, the outer hypervisor's backing of this VM), which we neither control nor see. \
The 'native' baseline is itself an L1 guest with a 2D walk over the outer NPT, and pagemap frames are \
this VM's guest-physical frames, not DRAM addresses. So: slowdowns compare L2 to L1, not a VM to bare \
metal; a backing page larger than the outer hypervisor's page cannot shorten the real walk (compare \
the rows by backing to see whether it does); and 'one segment' means contiguous in L1-physical memory.\n";
    }
    s += "Timing: lfence+rdtsc around the loop inside the kernel, converted with KVM's TSC frequency; \
the host clock around the call / KVM_RUN cross-checks it (tsc/wall in the JSON output).\n";
    s
}

/// Everything as text: both tables, notes and the caveat.
pub fn text(r: &Report) -> String {
    let mut s = host_memory(r).to_text();
    s += "\n";
    s += &measurements(r).to_text();
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s += "\n";
    s += &caveat(r);
    s
}

/// The measurement rows as CSV (one line per configuration, plain numbers).
pub fn csv(r: &Report) -> Result<String, compromis_report::ReportError> {
    let mut t = Table::new([
        "workload",
        "guest_pages",
        "backing",
        "native_backing",
        "native_ns_per_access",
        "vm_ns_per_access",
        "slowdown",
        "predicted_npt_slowdown",
        "predicted_compromis_slowdown",
        "host_extents",
        "one_segment",
        "vm_tsc_over_wall",
        "checksum",
    ]);
    for row in &r.rows {
        let host = r.hosts.iter().find(|h| h.backing == row.backing);
        let (pe, pc) = row.predicted.map_or((String::new(), String::new()), |p| {
            (format!("{:.4}", p.ept), format!("{:.4}", p.compromis))
        });
        t.push([
            row.workload.name().to_owned(),
            row.guest_page.name().to_owned(),
            row.backing.name().to_owned(),
            row.native_backing.name().to_owned(),
            format!("{:.3}", row.native.ns_per_access),
            format!("{:.3}", row.vm.ns_per_access),
            format!("{:.4}", row.slowdown),
            pe,
            pc,
            host.map(|h| h.extents.to_string()).unwrap_or_default(),
            host.map(|h| h.one_segment.to_string()).unwrap_or_default(),
            format!("{:.3}", row.vm.tsc_over_wall),
            format!("{:#x}", row.vm.checksum),
        ]);
    }
    t.to_csv()
}

/// The whole report as JSON.
pub fn json(r: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(r)
}
