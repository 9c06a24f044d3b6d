//! The machine code of the measured kernels, generated at run time with iced-x86's code
//! assembler (no cross toolchain). The same bytes run in the guest and natively in the host
//! process: each kernel is a position-independent System V function `fn(params: *mut Params)`
//! that touches only caller-saved registers and memory reached through `params`.
//!
//! Timing is `lfence; rdtsc` before and after the loop (the fences keep the loop's loads from
//! crossing the time stamps).

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
    /// Iterations (updates or nodes).
    pub count: u64,
    /// Out: checksum of the work.
    pub checksum: u64,
    /// Out: time stamp before the loop.
    pub tsc_start: u64,
    /// Out: time stamp after the loop.
    pub tsc_end: u64,
}

/// Byte size of [`Params`].
pub const PARAMS_BYTES: u64 = 48;

fn timestamp(a: &mut CodeAssembler, into: AsmRegister64) -> Result<(), IcedError> {
    a.lfence()?;
    a.rdtsc()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    a.mov(into, rax)?;
    a.lfence()
}

/// The kernel of `w`: gups does `v = t[off] ^ off; t[off] = v; sum += v` per update;
/// pointer-chase does `sum += node->val; node = pool + node->next` per node, then adds the last
/// node's offset to the sum.
pub fn kernel(w: Workload) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut top = a.create_label();
    let mut done = a.create_label();
    a.mov(r8, qword_ptr(rdi))?; // data
    a.mov(r9, qword_ptr(rdi + 8))?; // aux
    a.mov(rcx, qword_ptr(rdi + 16))?; // count
    a.xor(esi, esi)?; // checksum
    timestamp(&mut a, r10)?;
    a.test(rcx, rcx)?;
    a.jz(done)?;
    match w {
        Workload::Gups => {
            a.set_label(&mut top)?;
            a.mov(rdx, qword_ptr(r9))?;
            a.add(r9, 8)?;
            a.mov(rax, qword_ptr(r8 + rdx))?;
            a.xor(rax, rdx)?;
            a.mov(qword_ptr(r8 + rdx), rax)?;
            a.add(rsi, rax)?;
            a.dec(rcx)?;
            a.jnz(top)?;
            a.set_label(&mut done)?;
        }
        Workload::PointerChase => {
            a.mov(rdx, r9)?;
            a.set_label(&mut top)?;
            a.add(rsi, qword_ptr(r8 + rdx + 8))?;
            a.mov(rdx, qword_ptr(r8 + rdx))?;
            a.dec(rcx)?;
            a.jnz(top)?;
            a.add(rsi, rdx)?;
            a.set_label(&mut done)?;
        }
    }
    timestamp(&mut a, r11)?;
    a.mov(qword_ptr(rdi + 24), rsi)?;
    a.mov(qword_ptr(rdi + 32), r10)?;
    a.mov(qword_ptr(rdi + 40), r11)?;
    a.ret()?;
    a.assemble(0)
}

/// I/O port the guest writes when the kernel returned.
pub const DONE_PORT: u16 = 0x10;
/// I/O port an exception stub writes its vector to.
pub const EXCEPTION_PORT: u16 = 0x11;

/// The guest's entry: set the stack, call the kernel at `kernel` with `params`, report on
/// [`DONE_PORT`], halt. All addresses are guest-virtual (= guest-physical here).
pub fn guest_entry(stack_top: u64, params: u64, kernel: u64) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut halt = a.create_label();
    a.mov(rsp, stack_top)?;
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
        assert!(guest_entry(0x8000, 0x3000, 0x10100).unwrap().len() < 64);
    }
}
