//! The VM: one vCPU on `/dev/kvm` entered directly in 64-bit long mode, guest RAM from one
//! [`Ram`] range registered as one KVM memory slot, a watchdog that ends a guest running past its
//! budget, and every exit that is not the guest's "done" reported with its reason and registers.
//!
//! Sources: the KVM API (`Documentation/virt/kvm/api.rst`: KVM_SET_USER_MEMORY_REGION, KVM_RUN,
//! `immediate_exit` / signals), AMD64 APM vol. 2 §14.6 (entering long mode: CR0.PG+PE, CR4.PAE,
//! EFER.LME+LMA, a 64-bit code segment with L=1) and §8.9 (64-bit interrupt gates).

use crate::code::{self, DONE_PORT, EXCEPTION_PORT, PARAMS_BYTES, Params, STUB_BYTES, WARM_PORT};
use crate::memory::Ram;
use crate::paging::PageTables;
use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, mpsc};
use std::time::{Duration, Instant};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest-physical layout of the low memory the VMM sets up. The guest runs at the upper-half
/// alias: the virtual address of gPA `g` is `VIRT + g`.
pub mod layout {
    /// Virtual address of gPA 0 for the running guest.
    pub const VIRT: u64 = crate::paging::HIGH_BASE;
    /// The GDT: null, 64-bit code (selector 0x8), data (0x10).
    pub const GDT: u64 = 0x1000;
    /// The IDT: 32 interrupt gates to the exception stubs.
    pub const IDT: u64 = 0x2000;
    /// The shared page: the measured call's [`super::Params`] in, results out.
    pub const PARAMS: u64 = 0x3000;
    /// The warm-up call's parameters.
    pub const WARM_PARAMS: u64 = 0x3040;
    /// Top of the stack (the stack grows down to 0x4000).
    pub const STACK_TOP: u64 = 0x8000;
    /// The entry code.
    pub const ENTRY: u64 = 0x1_0000;
    /// The kernel.
    pub const KERNEL: u64 = 0x1_1000;
    /// The exception stubs.
    pub const STUBS: u64 = 0x1_2000;
    /// The page tables.
    pub const TABLES: u64 = 0x10_0000;
}

/// VM errors.
#[derive(Debug, Error)]
pub enum VmError {
    /// `/dev/kvm` is missing or not usable by this user.
    #[error("KVM is not usable: {0}")]
    NoKvm(String),
    /// A KVM ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The guest raised an exception.
    #[error("guest exception {vector} ({name}){detail}\n{regs}")]
    Exception {
        /// The vector.
        vector: u8,
        /// Its mnemonic.
        name: &'static str,
        /// Error code, faulting RIP, CR2.
        detail: String,
        /// Register dump.
        regs: String,
    },
    /// The guest stopped some other way (triple fault, unexpected halt or I/O, failed entry).
    #[error("guest stopped unexpectedly: {reason}\n{regs}")]
    Unexpected {
        /// What KVM reported.
        reason: String,
        /// Register dump.
        regs: String,
    },
    /// The guest ran past its budget and was stopped by the watchdog.
    #[error("watchdog: the guest ran past its {budget:?} budget and was stopped\n{regs}")]
    Watchdog {
        /// The budget.
        budget: Duration,
        /// Register dump.
        regs: String,
    },
    /// Guest memory could not be written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// Machine code could not be assembled.
    #[error("assembler: {0}")]
    Asm(String),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Environment variable naming the KVM device (default `/dev/kvm`; tests point it elsewhere).
pub const DEVICE_ENV: &str = "COMPROMIS_KVM_DEVICE";

/// Opens `/dev/kvm` (or `$COMPROMIS_KVM_DEVICE`), with a message that says what to do when it
/// cannot.
pub fn open_kvm() -> Result<Kvm, VmError> {
    let path = std::env::var(DEVICE_ENV).unwrap_or_else(|_| "/dev/kvm".to_owned());
    let c_path = std::ffi::CString::new(path.clone())
        .map_err(|_| VmError::NoKvm(format!("{path}: the path contains a NUL byte")))?;
    match Kvm::new_with_path(&c_path) {
        Ok(k) => Ok(k),
        Err(e) => Err(VmError::NoKvm(match e.errno() {
            libc::ENOENT => format!(
                "{path} does not exist (no KVM in this kernel, or virtualization disabled in the firmware / outer hypervisor)"
            ),
            libc::EACCES | libc::EPERM => {
                format!("{path}: permission denied (run as root or join the `kvm` group)")
            }
            _ => format!("{path}: {e}"),
        })),
    }
}

/// What one guest run measured.
#[derive(Clone, Copy, Debug)]
pub struct GuestRun {
    /// The kernel's parameters after the run (checksum and time stamps).
    pub params: Params,
    /// Host wall-clock time from the warm-up's exit to the done exit (one VM entry, the
    /// measured call, one exit).
    pub wall: Duration,
    /// The vCPU's TSC frequency in kHz, as KVM reports it.
    pub tsc_khz: Option<u32>,
}

/// A VM ready to run: its fds and the memory it was built over.
pub struct Vm<'a> {
    _vm: VmFd,
    vcpu: VcpuFd,
    ram: &'a Ram,
}

const GDT_ENTRIES: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

fn write<T: vm_memory::ByteValued>(mem: &GuestMemoryMmap, gpa: u64, v: T) -> Result<(), VmError> {
    mem.write_obj(v, GuestAddress(gpa))
        .map_err(|e| VmError::Memory(e.to_string()))
}

fn write_bytes(mem: &GuestMemoryMmap, gpa: u64, b: &[u8]) -> Result<(), VmError> {
    mem.write_slice(b, GuestAddress(gpa))
        .map_err(|e| VmError::Memory(e.to_string()))
}

impl<'a> Vm<'a> {
    /// Builds the VM over `ram` (guest-physical 0 = byte 0 of `ram`): GDT, IDT and exception
    /// stubs, the page `tables`, the entry code calling `kernel` (machine code) with `params`,
    /// and a vCPU in long mode at the entry.
    pub fn new(
        kvm: &Kvm,
        ram: &'a Ram,
        tables: &PageTables,
        kernel: &[u8],
        warm: Params,
        params: Params,
    ) -> Result<Vm<'a>, VmError> {
        let mem = ram.mem();
        // Low memory: GDT, IDT, stubs, entry, kernel, params, tables.
        for (i, e) in GDT_ENTRIES.iter().enumerate() {
            write(mem, layout::GDT + 8 * i as u64, *e)?;
        }
        let stubs = code::exception_stubs().map_err(|e| VmError::Asm(e.to_string()))?;
        write_bytes(mem, layout::STUBS, &stubs)?;
        for v in 0..32u64 {
            let target = layout::VIRT + layout::STUBS + v * STUB_BYTES as u64;
            // 64-bit interrupt gate: offset 15:0, selector 0x8, type 0xE present DPL0, offset
            // 31:16, offset 63:32, reserved.
            let lo = (target & 0xffff)
                | (0x8 << 16)
                | (0x8e00u64 << 32)
                | ((target >> 16) & 0xffff) << 48;
            let hi = target >> 32;
            write(mem, layout::IDT + v * 16, lo)?;
            write(mem, layout::IDT + v * 16 + 8, hi)?;
        }
        let v = layout::VIRT;
        let entry = code::guest_entry(
            v + layout::STACK_TOP,
            v + layout::WARM_PARAMS,
            v + layout::PARAMS,
            v + layout::KERNEL,
        )
        .map_err(|e| VmError::Asm(e.to_string()))?;
        write_bytes(mem, layout::ENTRY, &entry)?;
        write_bytes(mem, layout::KERNEL, kernel)?;
        write_params(mem, layout::WARM_PARAMS, warm)?;
        write_params(mem, layout::PARAMS, params)?;
        for p in &tables.pages {
            let bytes: Vec<u8> = p.entries.iter().flat_map(|e| e.to_le_bytes()).collect();
            write_bytes(mem, p.gpa.0, &bytes)?;
        }

        let vm = kvm.create_vm().map_err(kvm_err("create VM"))?;
        // Intel VMX needs a TSS area for real-mode emulation; harmless elsewhere.
        let _ = vm.set_tss_address(0xfffb_d000);
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram.len(),
            userspace_addr: ram.host_ptr() as u64,
        };
        // SAFETY: the region is `ram`'s whole mapping, which outlives the VM (`Vm` borrows
        // `ram`); guest writes to it are plain memory writes that Rust never aliases as typed
        // references (the VMM reads it only through vm-memory's volatile accessors).
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("set memory region"))?;
        let vcpu = vm.create_vcpu(0).map_err(kvm_err("create vCPU"))?;
        if let Ok(cpuid) = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES) {
            vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
        }
        let mut s = vcpu.get_sregs().map_err(kvm_err("get sregs"))?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x8,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment {
            selector: 0x10,
            type_: 3,
            db: 1,
            l: 0,
            ..code
        };
        s.cs = code;
        s.ds = data;
        s.es = data;
        s.fs = data;
        s.gs = data;
        s.ss = data;
        s.gdt.base = layout::VIRT + layout::GDT;
        s.gdt.limit = 23;
        s.idt.base = layout::VIRT + layout::IDT;
        s.idt.limit = 32 * 16 - 1;
        s.cr3 = tables.cr3.0;
        s.cr4 = 0x20 | 0x200 | 0x400; // PAE, OSFXSR, OSXMMEXCPT
        s.cr0 = 0x8000_0000 | 0x1_0000 | 0x20 | 0x10 | 0x2 | 0x1; // PG WP NE ET MP PE
        s.efer = 0x500; // LME | LMA
        vcpu.set_sregs(&s).map_err(kvm_err("set sregs"))?;
        let mut regs = vcpu.get_regs().map_err(kvm_err("get regs"))?;
        regs.rip = layout::VIRT + layout::ENTRY;
        regs.rsp = layout::VIRT + layout::STACK_TOP;
        regs.rflags = 0x2;
        vcpu.set_regs(&regs).map_err(kvm_err("set regs"))?;
        Ok(Vm { _vm: vm, vcpu, ram })
    }

    /// Runs the guest until it reports done, faults, or exceeds `budget` (the watchdog then
    /// interrupts KVM_RUN with a signal and the run ends with [`VmError::Watchdog`]).
    pub fn run(mut self, budget: Duration) -> Result<GuestRun, VmError> {
        install_signal_handler();
        let mem = self.ram.mem();
        let tsc_khz = self.vcpu.get_tsc_khz().ok();
        let thread = AtomicU64::new(0);
        let vcpu = &mut self.vcpu;
        let (wall, outcome) = std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let thread = &thread;
            let h = s.spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                let me = unsafe { libc::pthread_self() };
                thread.store(me as u64, Ordering::SeqCst);
                let mut start = Instant::now();
                let r = run_loop(vcpu, &mut start);
                let wall = start.elapsed();
                let _ = tx.send(());
                (wall, r)
            });
            let mut fired = false;
            if rx.recv_timeout(budget).is_err() {
                fired = true;
                loop {
                    let t = thread.load(Ordering::SeqCst);
                    if t != 0 {
                        // SAFETY: `t` is the id of the vCPU thread, alive until it sends on
                        // the channel (we keep signalling only until then); the signal's
                        // handler does nothing, it only makes KVM_RUN return EINTR.
                        unsafe {
                            libc::pthread_kill(t as libc::pthread_t, libc::SIGRTMIN());
                        }
                    }
                    if rx.recv_timeout(Duration::from_millis(10)).is_ok() {
                        break;
                    }
                }
            }
            let (wall, r) = h.join().unwrap_or((
                Duration::ZERO,
                Err(Exit::Other("the vCPU thread panicked".into())),
            ));
            (wall, r.map_err(|e| (e, fired)))
        });
        match outcome {
            Ok(()) => Ok(GuestRun {
                params: read_params(mem)?,
                wall,
                tsc_khz,
            }),
            Err((e, fired)) => {
                let regs = dump(&self.vcpu);
                Err(match e {
                    Exit::Interrupted if fired => VmError::Watchdog { budget, regs },
                    Exit::Exception(vector) => {
                        let (detail, name) = exception_detail(&self.vcpu, mem, vector);
                        VmError::Exception {
                            vector,
                            name,
                            detail,
                            regs,
                        }
                    }
                    Exit::Interrupted => VmError::Unexpected {
                        reason: "KVM_RUN interrupted by a signal".into(),
                        regs,
                    },
                    Exit::Other(reason) => VmError::Unexpected { reason, regs },
                })
            }
        }
    }
}

/// Writes the kernel's parameters to the shared page.
pub fn write_params(mem: &GuestMemoryMmap, at: u64, p: Params) -> Result<(), VmError> {
    let words = [p.data, p.aux, p.chunks, p.stamps, p.warm_len, p.checksum];
    for (i, w) in (0u64..).zip(words) {
        write(mem, at + 8 * i, w)?;
    }
    debug_assert_eq!(PARAMS_BYTES, 48);
    Ok(())
}

fn read_params(mem: &GuestMemoryMmap) -> Result<Params, VmError> {
    let r = |i: u64| {
        mem.read_obj::<u64>(GuestAddress(layout::PARAMS + 8 * i))
            .map_err(|e| VmError::Memory(e.to_string()))
    };
    Ok(Params {
        data: r(0)?,
        aux: r(1)?,
        chunks: r(2)?,
        stamps: r(3)?,
        warm_len: r(4)?,
        checksum: r(5)?,
    })
}

enum Exit {
    Exception(u8),
    Interrupted,
    Other(String),
}

/// Runs the vCPU to the done exit; `start` is reset when the warm-up call reports.
fn run_loop(vcpu: &mut VcpuFd, start: &mut Instant) -> Result<(), Exit> {
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(WARM_PORT, _)) => *start = Instant::now(),
            Ok(VcpuExit::IoOut(DONE_PORT, _)) => return Ok(()),
            Ok(VcpuExit::IoOut(EXCEPTION_PORT, data)) => {
                return Err(Exit::Exception(data.first().copied().unwrap_or(0xff)));
            }
            Ok(VcpuExit::Shutdown) => {
                return Err(Exit::Other(
                    "shutdown (triple fault: an exception while delivering an exception)".into(),
                ));
            }
            Ok(VcpuExit::Hlt) => return Err(Exit::Other("unexpected HLT".into())),
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Err(Exit::Other(format!(
                    "VM entry failed: hardware reason {reason:#x} on cpu {cpu}"
                )));
            }
            Ok(VcpuExit::Intr) => return Err(Exit::Interrupted),
            Ok(other) => return Err(Exit::Other(format!("unexpected exit {other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Err(Exit::Interrupted);
            }
            Err(e) => return Err(Exit::Other(format!("KVM_RUN failed: {e}"))),
        }
    }
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved",
];

/// Whether the CPU pushes an error code for `vector`.
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

fn exception_detail(vcpu: &VcpuFd, mem: &GuestMemoryMmap, vector: u8) -> (String, &'static str) {
    let name = EXCEPTION_NAMES
        .get(usize::from(vector))
        .copied()
        .unwrap_or("?");
    let Ok(regs) = vcpu.get_regs() else {
        return (String::new(), name);
    };
    let read = |a: u64| {
        mem.read_obj::<u64>(GuestAddress(a.wrapping_sub(layout::VIRT)))
            .ok()
    };
    let (ec, rip) = if has_error_code(vector) {
        (read(regs.rsp), read(regs.rsp + 8))
    } else {
        (None, read(regs.rsp))
    };
    let cr2 = vcpu.get_sregs().map(|s| s.cr2).unwrap_or(0);
    let mut d = String::new();
    if let Some(rip) = rip {
        d += &format!(" at rip {rip:#x}");
    }
    if let Some(ec) = ec {
        d += &format!(", error code {ec:#x}");
    }
    if vector == 14 {
        d += &format!(", cr2 {cr2:#x}");
    }
    (d, name)
}

fn dump(vcpu: &VcpuFd) -> String {
    let mut out = String::new();
    if let Ok(r) = vcpu.get_regs() {
        out += &format!(
            "  rip {:#018x} rsp {:#018x} rflags {:#x}\n  rax {:#018x} rcx {:#018x} rdx {:#018x} rsi {:#018x} rdi {:#018x}\n  r8  {:#018x} r9  {:#018x} r10 {:#018x} r11 {:#018x}",
            r.rip, r.rsp, r.rflags, r.rax, r.rcx, r.rdx, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11
        );
    }
    if let Ok(s) = vcpu.get_sregs() {
        out += &format!(
            "\n  cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer
        );
    }
    out
}

extern "C" fn on_watchdog_signal(_: libc::c_int) {}

fn install_signal_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler is an
        // async-signal-safe function that does nothing. No SA_RESTART, so KVM_RUN returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_watchdog_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGRTMIN(), &sa, std::ptr::null_mut());
        }
    });
}
