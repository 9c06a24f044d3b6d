//! The machine code of the measured kernels, generated at run time with iced-x86's code
//! assembler (no cross toolchain). The same bytes run in the guest and natively in the host
//! process: each kernel is a position-independent System V function `fn(params: *mut Params)`
//! that touches only caller-saved registers and memory reached through `params`.
//!
//! Timing is `lfence; rdtsc` before the loop and after every [`CHUNK`] iterations (the fences
//! keep the loop's loads from crossing the time stamps).

use crate::Workload;
use iced_x86::IcedError;
use iced_x86::code_asm::*;

/// What a kernel reads and writes: six 64-bit words (`#[repr(C)]`, shared with the guest at a
/// fixed gPA).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// gups: the table; pointer-chase: the node pool.
    pub data: u64,
    /// gups: the index array (byte offsets); pointer-chase: the first node's byte offset.
    pub aux: u64,
    /// Chunks of [`CHUNK`] iterations (updates or nodes) to run.
    pub chunks: u64,
    /// Where the `chunks + 1` time stamps go (one before the first chunk, one after each).
    pub stamps: u64,
    /// Bytes of `data` to touch (write the same value back, every 4 KiB) before timing, so
    /// first-touch faults of every layer are out of the measured loop.
    pub warm_len: u64,
    /// Out: checksum of the work.
    pub checksum: u64,
}

/// Byte size of [`Params`].
pub const PARAMS_BYTES: u64 = 48;

/// Iterations between two time stamps. Per-chunk times let the caller take the median, which a
/// preemption of the (shared) host CPU does not move.
pub const CHUNK: u64 = 1000;

/// `lfence; rdtsc` into `[r11]`, `r11 += 8` (clobbers rax, rdx).
fn stamp(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.lfence()?;
    a.rdtsc()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    a.mov(qword_ptr(r11), rax)?;
    a.add(r11, 8)?;
    a.lfence()
}

/// The kernel of `w`: gups does `v = t[off] ^ off; t[off] = v; sum += v` per update;
/// pointer-chase does `sum += node->val; node = pool + node->next` per node, then adds the last
/// node's offset to the sum. Registers: r8 data, r9 index pointer or current node, rcx chunks
/// left, r10 iterations left in the chunk, r11 next stamp slot, rsi checksum.
pub fn kernel(w: Workload) -> Result<Vec<u8>, IcedError> {
    build(Some(w))
}

/// The calibration kernel: the same loop with no memory access (`sum += 1` per iteration), to
/// measure how fast the vCPU executes plain instructions.
pub fn register_loop() -> Result<Vec<u8>, IcedError> {
    build(None)
}

fn build(w: Option<Workload>) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut warm = a.create_label();
    let mut warmed = a.create_label();
    let mut outer = a.create_label();
    let mut inner = a.create_label();
    let mut done = a.create_label();
    a.mov(r8, qword_ptr(rdi))?;
    a.mov(r9, qword_ptr(rdi + 8))?;
    a.mov(rcx, qword_ptr(rdi + 16))?;
    a.mov(r11, qword_ptr(rdi + 24))?;
    a.xor(esi, esi)?;
    // Warm-up: touch every 4 KiB page of the data (same value written back).
    a.mov(rax, r8)?;
    a.mov(rdx, r8)?;
    a.add(rdx, qword_ptr(rdi + 32))?;
    a.set_label(&mut warm)?;
    a.cmp(rax, rdx)?;
    a.jae(warmed)?;
    a.or(qword_ptr(rax), 0)?;
    a.add(rax, 4096)?;
    a.jmp(warm)?;
    a.set_label(&mut warmed)?;
    stamp(&mut a)?;
    a.test(rcx, rcx)?;
    a.jz(done)?;
    a.set_label(&mut outer)?;
    a.mov(r10, CHUNK)?;
    a.set_label(&mut inner)?;
    match w {
        None => {
            a.add(rsi, 1)?;
        }
        Some(Workload::Gups) => {
            a.mov(rdx, qword_ptr(r9))?;
            a.add(r9, 8)?;
            a.mov(rax, qword_ptr(r8 + rdx))?;
            a.xor(rax, rdx)?;
            a.mov(qword_ptr(r8 + rdx), rax)?;
            a.add(rsi, rax)?;
        }
        Some(Workload::PointerChase) => {
            a.add(rsi, qword_ptr(r8 + r9 + 8))?;
            a.mov(r9, qword_ptr(r8 + r9))?;
        }
    }
    a.dec(r10)?;
    a.jnz(inner)?;
    stamp(&mut a)?;
    a.dec(rcx)?;
    a.jnz(outer)?;
    a.set_label(&mut done)?;
    if w == Some(Workload::PointerChase) {
        a.add(rsi, r9)?;
    }
    a.mov(qword_ptr(rdi + 40), rsi)?;
    a.ret()?;
    a.assemble(0)
}

/// I/O port the guest writes when the measured call returned.
pub const DONE_PORT: u16 = 0x10;
/// I/O port the guest writes when the warm-up call returned.
pub const WARM_PORT: u16 = 0x12;
/// I/O port an exception stub writes its vector to.
pub const EXCEPTION_PORT: u16 = 0x11;

/// The guest's entry: set the stack, call the kernel at `kernel` with the warm-up parameters
/// `warm`, report on [`WARM_PORT`], call it with the measured `params`, report on
/// [`DONE_PORT`], halt. All addresses are guest-virtual (= guest-physical here).
pub fn guest_entry(
    stack_top: u64,
    warm: u64,
    params: u64,
    kernel: u64,
) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut halt = a.create_label();
    a.mov(rsp, stack_top)?;
    a.mov(rdi, warm)?;
    a.mov(rax, kernel)?;
    a.call(rax)?;
    a.mov(dx, u32::from(WARM_PORT))?;
    a.out(dx, al)?;
    a.mov(rdi, params)?;
    a.mov(rax, kernel)?;
    a.call(rax)?;
    a.mov(dx, u32::from(DONE_PORT))?;
    a.out(dx, al)?;
    a.set_label(&mut halt)?;
    a.hlt()?;
    a.jmp(halt)?;
    a.assemble(0)
}

/// Length of one exception stub (each is padded to this).
pub const STUB_BYTES: usize = 16;

/// 32 exception stubs, one per vector, [`STUB_BYTES`] apart: each writes its vector to
/// [`EXCEPTION_PORT`] and halts (the VMM then reads the stack the CPU pushed).
pub fn exception_stubs() -> Result<Vec<u8>, IcedError> {
    let mut out = Vec::with_capacity(32 * STUB_BYTES);
    for v in 0..32u32 {
        let mut a = CodeAssembler::new(64)?;
        let mut halt = a.create_label();
        a.mov(al, v)?;
        a.mov(dx, u32::from(EXCEPTION_PORT))?;
        a.out(dx, al)?;
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)?;
        let mut b = a.assemble(0)?;
        debug_assert!(b.len() <= STUB_BYTES);
        b.resize(STUB_BYTES, 0xcc);
        out.extend(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_assembles_and_is_position_independent() {
        for w in [Workload::Gups, Workload::PointerChase] {
            let k = kernel(w).unwrap();
            assert!(k.len() > 20 && k.len() < 200);
            assert_eq!(k.last(), Some(&0xc3)); // ret
        }
        assert_eq!(exception_stubs().unwrap().len(), 32 * STUB_BYTES);
        assert!(guest_entry(0x8000, 0x3040, 0x3000, 0x10100).unwrap().len() < 96);
    }
}
