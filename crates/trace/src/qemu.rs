//! Recording a program under QEMU user-mode emulation with our TCG plugin (`compromis record
//! --tracer qemu`), and reading the plugin's binary record stream.
//!
//! `qemu-x86_64 -cpu max -plugin PLUGIN,out=/proc/<our pid>/fd/<read end> -- CMD ARGS`: the plugin
//! (crate `compromis-qemu-plugin`, built and embedded by this crate's build script, written to a
//! private temporary file at run time) opens that path, which gives it a write end of our pipe, and
//! writes 64 KiB chunks of 8-byte records to it. The program's stdin, stdout and stderr stay
//! inherited. As with valgrind ([`crate::valgrind`]), a waiter thread reaps QEMU and then drops our
//! copy of the write end, so the reader sees end-of-file once QEMU (and any forked child, which
//! inherits the plugin's descriptor) is gone; dropping a [`Recording`] kills QEMU and waits for it.
//!
//! The stream (specified in `docs/traces.md`, "QEMU plugin stream"): chunks of a 16-byte header
//! (magic, count, pid, vCPU, kind) and `count` 64-bit little-endian words. Record chunks carry one
//! vCPU's records in program order; control chunks say hello (protocol version, whether fetches
//! are recorded), fork (a child process and its parent), exec (a process called `execve`) and exit
//! (a process finished and flushed everything). [`QemuReader`] checks every chunk and yields
//! [`Record`]s; [`QemuReader::status_handle`] and [`QemuReader::cursor`] tell which process and
//! thread each record belongs to; [`QemuOps`] turns that into simulator ops in which threads share
//! their process's address space and each process is its own simulated process.

use crate::error::{Location, TraceError};
use crate::process::Children;
use crate::rec::Record;
pub use crate::supervise::{KillHandle, Recording};
use crate::{RecordSource, TraceFileWriter};
use compromis_types::{Op, Pid};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{PipeReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The plugin library, built from `crates/qemu-plugin` by the build script (x86_64 Linux only).
#[cfg(compromis_qemu_plugin)]
pub const PLUGIN: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("OUT_DIR"),
    "/libcompromis_qemu_plugin.so"
)));
/// The plugin library: not available on this target.
#[cfg(not(compromis_qemu_plugin))]
pub const PLUGIN: Option<&[u8]> = None;

/// First 32 bits of every chunk header ("CQP1").
pub const MAGIC: u32 = 0x3150_5143;
/// The protocol version this reader speaks (in the hello chunk).
pub const PROTOCOL: u64 = 2;
/// Most record words in one chunk.
pub const CHUNK_RECORDS_MAX: u32 = 8190;
/// Most payload words of a control chunk.
const CONTROL_WORDS_MAX: u32 = 16;
/// Most payload words of a TB chunk.
const TB_WORDS_MAX: u32 = 16384;
/// Most instructions in one TB.
const TB_INSNS_MAX: u64 = 2047;
/// TB numbers may run ahead of the table by at most this much (garbage would allocate without
/// bound otherwise).
const TB_NUMBER_GAP_MAX: usize = 1 << 20;
const CHUNK_RECORDS: u8 = 0;
const CHUNK_HELLO: u8 = 1;
const CHUNK_EXEC: u8 = 2;
const CHUNK_EXIT: u8 = 3;
const CHUNK_FORK: u8 = 4;
const CHUNK_TBS: u8 = 5;
const ADDR_MASK: u64 = crate::native::packed::ADDR_MASK;
/// The pipe buffer asked for (`F_SETPIPE_SZ`).
const PIPE_BYTES: i32 = 1 << 20;
/// A TB marker's bit 61: "reached instruction i" (i in bits 48-58), else the start marker.
const MARK_REACH: u64 = 1 << 61;
/// A TB marker's bits 0-47: the TB number.
const TB_NUMBER_MASK: u64 = (1 << 48) - 1;

/// The TBs (translation blocks) a process described: per TB number, where its instructions'
/// fetch records start in `fetches` and how many there are.
#[derive(Clone, Debug, Default)]
struct TbTable {
    blocks: Vec<(u32, u32)>,
    /// Fetch records in the reader's output encoding (kind 0, length, address).
    fetches: Vec<u64>,
}

/// The TB a thread is executing: its fetches `next..` are not yet emitted.
#[derive(Clone, Copy, Debug)]
struct TbCursor {
    number: u64,
    start: u32,
    n: u32,
    next: u32,
}

/// An error preparing, starting or waiting for QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// No command was given.
    #[error("No command to record")]
    NoCommand,
    /// This build has no plugin (not x86_64 Linux).
    #[error("This build of compromis has no QEMU plugin (x86_64 Linux only); use --tracer lackey")]
    NoPlugin,
    /// The plugin could not be written to a temporary file.
    #[error("Cannot write the QEMU plugin to a temporary file")]
    PluginFile(#[source] std::io::Error),
    /// The pipe could not be created.
    #[error("Cannot create the trace pipe")]
    Pipe(#[source] std::io::Error),
    /// The program's output file could not be created.
    #[error("Cannot open the program's output file")]
    ProgramOutput(#[source] std::io::Error),
    /// QEMU could not be started.
    #[error("Cannot start {qemu:?} (is qemu-user installed?)")]
    Spawn {
        /// The QEMU executable.
        qemu: OsString,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The program is not a path and is not in `PATH` (QEMU does not search `PATH` itself).
    #[error("Cannot find {0:?} in PATH")]
    NotFound(OsString),
    /// The program is not an ELF executable (a `#!` script, typically): QEMU user mode cannot
    /// load it.
    #[error(
        "{path} is not an ELF executable{}: qemu-user runs ELF programs only; run the program it \
         starts directly, or use --tracer lackey",
        if *script { " but a #! script (a wrapper)" } else { "" }
    )]
    NotElf {
        /// The program's path.
        path: PathBuf,
        /// It starts with `#!`.
        script: bool,
    },
}

/// The embedded plugin written to a private temporary file (mode 0600, removed on drop).
#[derive(Debug)]
pub struct PluginFile {
    file: tempfile::TempPath,
    /// Removed by a signal handler if the process is stopped.
    _registered: compromis_types::cleanup::Registered,
}

impl PluginFile {
    /// Writes [`PLUGIN`] to a new file in the temporary directory.
    pub fn write() -> Result<PluginFile, QemuError> {
        let bytes = PLUGIN.ok_or(QemuError::NoPlugin)?;
        let mut f = tempfile::Builder::new()
            .prefix(".compromis-qemu-plugin-")
            .suffix(".so")
            .tempfile()
            .map_err(QemuError::PluginFile)?;
        std::io::Write::write_all(&mut f, bytes).map_err(QemuError::PluginFile)?;
        let file = f.into_temp_path();
        Ok(PluginFile {
            _registered: compromis_types::cleanup::Registered::new(&file),
            file,
        })
    }

    /// Where the plugin is.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

/// Why QEMU cannot be used as a tracer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QemuUnavailable {
    /// This build has no plugin.
    #[error("this build has no QEMU plugin (x86_64 Linux only)")]
    NoPlugin,
    /// The QEMU executable does not run.
    #[error("{0} not found (install the qemu-user package)")]
    NotFound(String),
    /// QEMU runs but was built without plugin support (e.g. `qemu-user-static`).
    #[error("{0} has no TCG plugin support (qemu-user-static has none; install qemu-user)")]
    NoPluginSupport(String),
}

/// Checks that `qemu` runs and accepts `-plugin`. Returns its version line.
pub fn qemu_available(qemu: &OsStr) -> Result<String, QemuUnavailable> {
    if PLUGIN.is_none() {
        return Err(QemuUnavailable::NoPlugin);
    }
    let name = qemu.to_string_lossy().into_owned();
    let help = Command::new(qemu)
        .arg("-h")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|_| QemuUnavailable::NotFound(name.clone()))?;
    let text = String::from_utf8_lossy(&help.stdout);
    if !text.lines().any(|l| l.trim_start().starts_with("-plugin")) {
        return Err(QemuUnavailable::NoPluginSupport(name));
    }
    let version = Command::new(qemu)
        .arg("-version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|_| QemuUnavailable::NotFound(name.clone()))?;
    Ok(String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned())
}

/// How to run the program under QEMU.
#[derive(Clone, Debug)]
pub struct QemuCommand {
    /// The QEMU executable (default `qemu-x86_64`, found in `PATH`).
    pub qemu: OsString,
    /// The plugin library.
    pub plugin: PathBuf,
    /// The CPU model (`-cpu`); `max` makes glibc choose the code paths it uses natively.
    pub cpu: String,
    /// Also record instruction fetches.
    pub fetches: bool,
    /// With `fetches`: mark TB starts and ends only (plugin option `fetches=tb`), about a third
    /// cheaper for QEMU but not exact on QEMU 7.2 (docs/traces.md, "QEMU plugin stream");
    /// otherwise an exact marker per instruction.
    pub tb_fetches: bool,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// Where the program's stdout and stderr go.
    pub program_output: crate::ProgramOutput,
}

impl QemuCommand {
    /// Runs `command` under `qemu-x86_64 -cpu max` with `plugin`, data accesses only.
    pub fn new(plugin: PathBuf, command: Vec<OsString>) -> QemuCommand {
        QemuCommand {
            qemu: "qemu-x86_64".into(),
            plugin,
            cpu: "max".into(),
            fetches: false,
            tb_fetches: false,
            command,
            program_output: crate::ProgramOutput::Inherit,
        }
    }

    /// QEMU's arguments before the program, given the path the plugin writes to and the name
    /// the program sees as `argv[0]` (QEMU is given the resolved path).
    pub fn qemu_args(&self, out: &str, argv0: &OsStr) -> Vec<OsString> {
        let mut plugin = self.plugin.as_os_str().to_owned();
        plugin.push(format!(
            ",out={out},fetches={},exec=stop",
            match (self.fetches, self.tb_fetches) {
                (false, _) => "off",
                (true, false) => "on",
                (true, true) => "tb",
            }
        ));
        vec![
            "-0".into(),
            argv0.to_owned(),
            "-cpu".into(),
            self.cpu.clone().into(),
            "-plugin".into(),
            plugin,
            "--".into(),
        ]
    }

    /// Starts QEMU. Returns the recording (owning the process) and the record stream.
    pub fn spawn(&self) -> Result<(Recording, PipeReader), QemuError> {
        if self.command.is_empty() {
            return Err(QemuError::NoCommand);
        }
        let program = find_program(&self.command[0])?;
        check_elf(&program)?;
        let (reader, writer) = std::io::pipe().map_err(QemuError::Pipe)?;
        // A 1 MiB pipe (the default limit for unprivileged users): QEMU writes 16 chunks ahead
        // before it waits for the reader. Best effort: the default 64 KiB works too.
        let _ = crate::sys::grow_pipe(reader.as_raw_fd(), PIPE_BYTES);
        let out = format!("/proc/{}/fd/{}", std::process::id(), reader.as_raw_fd());
        let (stdout, stderr) = self
            .program_output
            .stdio()
            .map_err(QemuError::ProgramOutput)?;
        let child = Command::new(&self.qemu)
            .args(self.qemu_args(&out, &self.command[0]))
            .arg(program)
            .args(&self.command[1..])
            .stdin(Stdio::inherit())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| QemuError::Spawn {
                qemu: self.qemu.clone(),
                source,
            })?;
        // QEMU gone: end-of-file for the reader once the plugin's descriptors closed too.
        Ok((Recording::start(child, move || drop(writer)), reader))
    }
}

/// The program to run: `name` itself when it contains a `/`, else the first executable file of
/// that name in `PATH` (as `execvp` does; QEMU user mode only opens the path it is given).
pub fn find_program(name: &OsStr) -> Result<PathBuf, QemuError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if name.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| QemuError::NotFound(name.to_owned()))
}

/// Launchers that run another program by `exec` (QEMU user mode cannot follow an exec).
pub const LAUNCHERS: [&str; 14] = [
    "env", "nice", "nohup", "time", "timeout", "taskset", "stdbuf", "chrt", "ionice", "setsid",
    "sh", "bash", "dash", "exec",
];

/// Why `command` is a wrapper that ends up `exec`ing another program, if it is one: a `#!`
/// script (a pyenv/rbenv/asdf shim, any launcher script) or a known launcher ([`LAUNCHERS`]).
/// `record` picks the lackey tracer for these when no tracer was chosen, since only lackey follows
/// exec.
pub fn wrapper_reason(command: &OsStr) -> Option<String> {
    let path = find_program(command).ok()?;
    if let Err(QemuError::NotElf { script: true, .. }) = check_elf(&path) {
        return Some(format!("{} is a #! script", path.display()));
    }
    let base = path.file_name()?.to_str()?;
    LAUNCHERS
        .contains(&base)
        .then(|| format!("{base} is a launcher that execs another program"))
}

/// Refuses a program QEMU cannot load: anything that does not start with the ELF magic (a file
/// that cannot be read is left to QEMU, which reports it).
fn check_elf(path: &Path) -> Result<(), QemuError> {
    let mut head = [0u8; 4];
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(());
    };
    let n = f.read(&mut head).unwrap_or(0);
    if n == 4 && head == *b"\x7fELF" {
        return Ok(());
    }
    Err(QemuError::NotElf {
        path: path.to_owned(),
        script: n >= 2 && head[..2] == *b"#!",
    })
}

// ---------------------------------------------------------------------------------------------
// The reader.

/// One thread of one traced process: the stream a record chunk belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    /// The host process id (QEMU's, which is the program's).
    pub pid: u32,
    /// QEMU's vCPU index: one per live guest thread (reused after a thread exits).
    pub vcpu: u32,
}

impl StreamId {
    fn pack(self) -> u64 {
        u64::from(self.pid) | (u64::from(self.vcpu) << 32)
    }

    fn unpack(v: u64) -> StreamId {
        StreamId {
            pid: (v & 0xffff_ffff) as u32,
            vcpu: (v >> 32) as u32,
        }
    }
}

/// A process that called `execve`/`execveat` (the plugin stopped it before the exec ran).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    /// The process.
    pub pid: u32,
    /// The system call number (59 execve, 322 execveat).
    pub syscall: u64,
}

/// What the stream said so far, besides the records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QemuStatus {
    /// The hello chunk arrived (the plugin loaded): the main process's pid.
    pub main_pid: Option<u32>,
    /// The plugin records instruction fetches.
    pub fetches: bool,
    /// Records per stream (process and thread).
    pub streams: BTreeMap<StreamId, u64>,
    /// Record chunks read.
    pub chunks: u64,
    /// Forked processes and their parents, in order of appearance.
    pub forks: Vec<(u32, u32)>,
    /// Processes that exited after flushing all their records.
    pub exited: BTreeSet<u32>,
    /// A process called exec.
    pub exec: Option<ExecEvent>,
    /// Records the plugin could not keep (vCPU index beyond its table).
    pub lost: u64,
}

impl QemuStatus {
    /// Total records.
    pub fn records(&self) -> u64 {
        self.streams.values().sum()
    }

    /// Distinct processes that produced records or forked.
    pub fn processes(&self) -> usize {
        let mut pids: BTreeSet<u32> = self.streams.keys().map(|s| s.pid).collect();
        pids.extend(self.forks.iter().map(|f| f.0));
        pids.extend(self.main_pid);
        pids.len()
    }
}

/// Which stream the record last returned by a [`QemuReader`] belongs to; shareable with the
/// consumer of a wrapping source (e.g. a [`crate::TeeSource`]).
#[derive(Clone, Debug, Default)]
pub struct StreamCursor(Arc<AtomicU64>);

impl StreamCursor {
    /// The stream of the last record returned.
    #[inline]
    pub fn get(&self) -> StreamId {
        StreamId::unpack(self.0.load(Ordering::Relaxed))
    }
}

/// Reads the plugin's chunks and yields their records, in chunk order (each thread's records in
/// its program order; different threads interleave by chunk).
pub struct QemuReader<R: Read> {
    input: R,
    name: String,
    offset: u64,
    bytes: Vec<u8>,
    /// The current chunk's records, expanded (fetches inserted), in the one-word encoding
    /// [`Self::decode`] reads.
    words: Vec<u64>,
    /// Per process: its TBs.
    tbs: std::collections::HashMap<u32, TbTable>,
    /// Per thread: the TB it executes.
    running: std::collections::HashMap<StreamId, TbCursor>,
    pos: usize,
    cursor: StreamCursor,
    status: Arc<Mutex<QemuStatus>>,
    done: bool,
}

impl<R: Read> std::fmt::Debug for QemuReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuReader")
            .field("name", &self.name)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

enum Chunk {
    Records,
    End,
}

impl<R: Read> QemuReader<R> {
    /// A reader of the stream `input`, named `name` in errors.
    pub fn new(input: R, name: &str) -> QemuReader<R> {
        QemuReader {
            input,
            name: name.to_owned(),
            offset: 0,
            bytes: Vec::with_capacity(CHUNK_RECORDS_MAX as usize * 8),
            words: Vec::with_capacity(CHUNK_RECORDS_MAX as usize),
            tbs: std::collections::HashMap::new(),
            running: std::collections::HashMap::new(),
            pos: 0,
            cursor: StreamCursor::default(),
            status: Arc::default(),
            done: false,
        }
    }

    /// The stream status, updated as chunks arrive (readable from another thread).
    pub fn status_handle(&self) -> Arc<Mutex<QemuStatus>> {
        self.status.clone()
    }

    /// The stream of the record last returned.
    pub fn cursor(&self) -> StreamCursor {
        self.cursor.clone()
    }

    fn status(&self) -> std::sync::MutexGuard<'_, QemuStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bad(&self, at: u64, reason: &'static str, bytes: &[u8]) -> TraceError {
        TraceError::BadRecord {
            path: self.name.clone(),
            at: Location::Byte(at),
            reason,
            text: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Fills `self.bytes` with exactly `n` bytes; `Ok(false)` on end of input before the first.
    /// (The buffer is only zeroed where it grows: chunks are mostly of one size.)
    fn read_exact_or_eof(&mut self, n: usize, what: &'static str) -> Result<bool, TraceError> {
        if self.bytes.len() > n {
            self.bytes.truncate(n);
        } else {
            self.bytes.resize(n, 0);
        }
        let got = fill(
            &mut self.input,
            &mut self.bytes,
            &self.name,
            self.offset,
            what,
        )?;
        self.offset += got as u64;
        Ok(got > 0)
    }

    /// Reads a chunk header; `Ok(None)` on end of input before its first byte.
    fn read_head(&mut self) -> Result<Option<[u8; 16]>, TraceError> {
        let mut head = [0u8; 16];
        let got = fill(
            &mut self.input,
            &mut head,
            &self.name,
            self.offset,
            "in a chunk header",
        )?;
        self.offset += got as u64;
        Ok((got > 0).then_some(head))
    }

    /// Reads chunks until one with records, or the end.
    fn next_chunk(&mut self) -> Result<Chunk, TraceError> {
        loop {
            let at = self.offset;
            let Some(head) = self.read_head()? else {
                return self.at_end(at);
            };
            let w0 = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
            let w1 = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
            if (w0 & 0xffff_ffff) as u32 != MAGIC {
                return Err(self.bad(at, "not a QEMU plugin chunk (bad magic)", &head));
            }
            let count = (w0 >> 32) as u32;
            let id = StreamId {
                pid: (w1 & 0xffff_ffff) as u32,
                vcpu: ((w1 >> 32) & 0xff_ffff) as u32,
            };
            let kind = (w1 >> 56) as u8;
            let max = match kind {
                CHUNK_RECORDS => CHUNK_RECORDS_MAX,
                CHUNK_TBS => TB_WORDS_MAX,
                _ => CONTROL_WORDS_MAX,
            };
            if count > max {
                return Err(self.bad(at, "chunk longer than the protocol allows", &head));
            }
            if self.status().main_pid.is_none() && kind != CHUNK_HELLO {
                return Err(self.bad(at, "the stream does not start with a hello chunk", &head));
            }
            let n = count as usize * 8;
            if n > 0 && !self.read_exact_or_eof(n, "in a chunk's payload")? {
                return Err(TraceError::Truncated {
                    path: self.name.clone(),
                    at: Location::Byte(self.offset),
                    reason: "in a chunk's payload",
                });
            }
            if n == 0 {
                self.bytes.clear();
            }
            self.words.clear();
            self.pos = 0;
            let word = |i: usize| {
                self.bytes
                    .get(8 * i..8 * i + 8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            };
            let first = word(0);
            match kind {
                CHUNK_RECORDS => {
                    if count == 0 {
                        continue;
                    }
                    self.expand(id, at)?;
                    self.cursor.0.store(id.pack(), Ordering::Relaxed);
                    let mut s = self.status();
                    s.chunks += 1;
                    *s.streams.entry(id).or_default() += self.words.len() as u64;
                    return Ok(Chunk::Records);
                }
                CHUNK_TBS => self.describe_tbs(id.pid, at)?,
                CHUNK_HELLO => {
                    if first != PROTOCOL {
                        return Err(self.bad(
                            at,
                            "unsupported plugin protocol version",
                            &first.to_le_bytes(),
                        ));
                    }
                    let mut s = self.status();
                    if s.main_pid.is_some() {
                        drop(s);
                        return Err(self.bad(at, "a second hello chunk", &w1.to_le_bytes()));
                    }
                    s.main_pid = Some(id.pid);
                    s.fetches = id.vcpu & 1 == 1;
                }
                CHUNK_FORK => {
                    let parent = u32::try_from(first).unwrap_or(u32::MAX);
                    // The child runs the TBs its parent translated before the fork.
                    if let Some(t) = self.tbs.get(&parent) {
                        let t = t.clone();
                        self.tbs.insert(id.pid, t);
                    }
                    self.status().forks.push((id.pid, parent));
                }
                CHUNK_EXIT => {
                    let mut s = self.status();
                    s.exited.insert(id.pid);
                    s.lost += first;
                }
                CHUNK_EXEC => {
                    let ev = ExecEvent {
                        pid: id.pid,
                        syscall: first,
                    };
                    self.status().exec = Some(ev);
                    return Err(TraceError::Io {
                        path: self.name.clone(),
                        at: Location::Byte(at),
                        source: std::io::Error::other(format!(
                            "process {} called {}: qemu-user runs the new program natively, \
                             untraced, so the plugin stopped it",
                            ev.pid,
                            if ev.syscall == 322 {
                                "execveat"
                            } else {
                                "execve"
                            }
                        )),
                    });
                }
                _ => return Err(self.bad(at, "unknown chunk kind", &w1.to_le_bytes())),
            }
        }
    }

    /// Reads a TB chunk (in `self.bytes`) of process `pid` into its table: per TB its number,
    /// its instruction count, then per instruction `address | length << 56`.
    fn describe_tbs(&mut self, pid: u32, at: u64) -> Result<(), TraceError> {
        let words: Vec<u64> = self
            .bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect();
        let table = self.tbs.entry(pid).or_default();
        let mut i = 0;
        while i < words.len() {
            let number = words[i];
            let n_raw = words.get(i + 1).copied().unwrap_or(0);
            let n32 = u32::try_from(n_raw).unwrap_or(0);
            let n = usize::try_from(n32).unwrap_or(0);
            let gap = usize::try_from(number).unwrap_or(usize::MAX);
            if n == 0
                || n_raw > TB_INSNS_MAX
                || i + 2 + n > words.len()
                || gap > table.blocks.len() + TB_NUMBER_GAP_MAX
                || words[i + 2..i + 2 + n].iter().any(|w| w >> 62 != 0)
            {
                return Err(self.bad(at, "bad TB description", &number.to_le_bytes()));
            }
            let start = u32::try_from(table.fetches.len()).unwrap_or(u32::MAX);
            table.fetches.extend_from_slice(&words[i + 2..i + 2 + n]);
            if gap >= table.blocks.len() {
                table.blocks.resize(gap + 1, (0, 0));
            }
            table.blocks[gap] = (start, n32);
            i += 2 + n;
        }
        Ok(())
    }

    /// Expands the records chunk of stream `id` (in `self.bytes`) into `self.words`: data
    /// records re-encoded, the fetches of the TBs executed inserted before the data records of
    /// their instructions and at each TB's end marker (see the plugin's documentation).
    fn expand(&mut self, id: StreamId, at: u64) -> Result<(), TraceError> {
        let fetches = self.status().fetches;
        let mut running = self.running.remove(&id);
        let table = self.tbs.get(&id.pid);
        let mut out = std::mem::take(&mut self.words);
        let mut words = self
            .bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        let mut bad = None;
        while let Some(w) = words.next() {
            let kind = w >> 62;
            if kind == 0 {
                // A TB marker.
                let number = w & TB_NUMBER_MASK;
                let block = table.and_then(|t| {
                    let &(start, n) = t.blocks.get(usize::try_from(number).ok()?)?;
                    (n > 0).then_some((t, start, n))
                });
                let Some((t, start, n)) = block.filter(|_| fetches) else {
                    bad = Some((w, "a TB marker of an undescribed TB"));
                    break;
                };
                if w & MARK_REACH == 0 {
                    // Start: the first instruction's fetch now.
                    out.push(t.fetches[start as usize]);
                    running = Some(TbCursor {
                        number,
                        start,
                        n,
                        next: 1,
                    });
                } else {
                    let Some(c) = running.as_mut().filter(|c| c.number == number) else {
                        bad = Some((w, "a TB marker without its start"));
                        break;
                    };
                    let index = ((w >> 48) & 0x7ff) as u32;
                    if index >= c.n {
                        bad = Some((w, "a TB marker of an instruction beyond its TB"));
                        break;
                    }
                    if index == c.next {
                        // The usual case (a marker before every instruction): one fetch.
                        out.push(t.fetches[(c.start + index) as usize]);
                        c.next = index + 1;
                    } else if index > c.next {
                        out.extend_from_slice(
                            &t.fetches[(c.start + c.next) as usize..=(c.start + index) as usize],
                        );
                        c.next = index + 1;
                    }
                }
                continue;
            }
            let (kind, addr) = if kind == 3 {
                // A wide data record: the address is the next word.
                let Some(addr) = words.next() else {
                    bad = Some((w, "a wide record without its address"));
                    break;
                };
                (1 + ((w >> 47) & 1), addr)
            } else {
                (kind, w & ((1 << 48) - 1))
            };
            let shift = (w >> 59) & 7;
            let index = ((w >> 48) & 0x7ff) as u32;
            if fetches {
                let (Some(c), Some(t)) = (running.as_mut(), table) else {
                    bad = Some((w, "a data record outside any TB"));
                    break;
                };
                if index >= c.n {
                    bad = Some((w, "a data record of an instruction beyond its TB"));
                    break;
                }
                if index >= c.next {
                    out.extend_from_slice(
                        &t.fetches[(c.start + c.next) as usize..=(c.start + index) as usize],
                    );
                    c.next = index + 1;
                }
            }
            out.push((kind << 62) | (shift << 56) | (addr & ADDR_MASK));
        }
        self.words = out;
        if let Some((w, reason)) = bad {
            return Err(self.bad(at, reason, &w.to_le_bytes()));
        }
        if let Some(c) = running {
            self.running.insert(id, c);
        }
        Ok(())
    }

    /// End of input at a chunk boundary: clean only after the main process's exit chunk.
    fn at_end(&mut self, at: u64) -> Result<Chunk, TraceError> {
        let s = self.status();
        let clean = s.main_pid.is_some_and(|p| s.exited.contains(&p));
        drop(s);
        if clean {
            Ok(Chunk::End)
        } else {
            Err(TraceError::Truncated {
                path: self.name.clone(),
                at: Location::Byte(at),
                reason: "the stream ended before the program's exit chunk \
                         (qemu failed to start the program, or was killed)",
            })
        }
    }

    #[inline]
    fn decode(w: u64) -> Result<Record, u64> {
        crate::native::packed::unpack(w)
    }

    /// Expands the next records chunk into `words`: `None` at the end of the stream (or after
    /// an error), `Some(Err)` on an error (the stream then ends).
    fn advance(&mut self) -> Option<Result<(), TraceError>> {
        if self.done {
            return None;
        }
        match self.next_chunk() {
            Ok(Chunk::Records) => Some(Ok(())),
            Ok(Chunk::End) => {
                self.done = true;
                self.words.clear();
                None
            }
            Err(e) => {
                self.done = true;
                self.words.clear();
                Some(Err(e))
            }
        }
    }

    /// The records of the next chunk (or what is left of the current one) as packed words
    /// ([`crate::native::packed`]), `None` at the end: the same records as the iterator, in the
    /// same order, without building a [`Record`] each; [`Self::cursor`] names their stream.
    /// The expansion only ever produces valid packed words.
    pub fn next_words(&mut self) -> Option<Result<&[u64], TraceError>> {
        if self.pos >= self.words.len()
            && let Err(e) = self.advance()?
        {
            return Some(Err(e));
        }
        let start = self.pos;
        self.pos = self.words.len();
        Some(Ok(&self.words[start..]))
    }
}

/// Fills `buf` from `input` (at byte `offset` of the stream named `name`); returns `buf.len()`,
/// or 0 on end of input before the first byte; end of input after it is an error (`what`).
fn fill<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    name: &str,
    offset: u64,
    what: &'static str,
) -> Result<usize, TraceError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(0),
            Ok(0) => {
                return Err(TraceError::Truncated {
                    path: name.to_owned(),
                    at: Location::Byte(offset + got as u64),
                    reason: what,
                });
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(TraceError::Io {
                    path: name.to_owned(),
                    at: Location::Byte(offset + got as u64),
                    source,
                });
            }
        }
    }
    Ok(got)
}

impl<R: Read> Iterator for QemuReader<R> {
    type Item = Result<Record, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(&w) = self.words.get(self.pos) {
                self.pos += 1;
                return Some(Self::decode(w).map_err(|w| {
                    // (Expanded chunks are longer than their bytes: point at the chunk's end.)
                    self.bad(self.offset, "bad record kind or size", &w.to_le_bytes())
                }));
            }
            if let Err(e) = self.advance()? {
                return Some(Err(e));
            }
        }
    }
}

impl<R: Read + Send> RecordSource for QemuReader<R> {
    fn skipped(&self) -> u64 {
        0
    }
}

/// Simulator ops from a QEMU record stream (possibly teed, see [`crate::TeeSource`]), with the
/// stream marks of `cursor`: the threads of a process share its address space (no op between
/// them: one simulated core runs them in chunk-sized slices); each process is its own simulated
/// process, the program's first, then forked children in order of appearance (an
/// [`Op::Switch`] whenever the process changes).
pub struct QemuOps<S: RecordSource> {
    src: S,
    cursor: StreamCursor,
    pids: Vec<u32>,
    current: Option<u32>,
    pending: [Option<Op>; 2],
    children: Children,
    root: Option<u32>,
}

impl<S: RecordSource> std::fmt::Debug for QemuOps<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuOps")
            .field("processes", &self.pids.len())
            .finish_non_exhaustive()
    }
}

impl<S: RecordSource> QemuOps<S> {
    /// Ops of `src`, whose records are marked by `cursor` (from the [`QemuReader`] inside it).
    pub fn new(src: S, cursor: StreamCursor) -> QemuOps<S> {
        QemuOps {
            src,
            cursor,
            pids: Vec::new(),
            current: None,
            pending: [None, None],
            children: Children::Separate,
            root: None,
        }
    }

    /// What to do with the processes the program forks (as `record --children`): `none` keeps
    /// only the first process's records, `all` puts every record in one address space,
    /// `separate` (the default of this type) makes each process its own guest process.
    pub fn with_children(mut self, children: Children) -> QemuOps<S> {
        self.children = children;
        self
    }

    /// The simulated process of host process `pid` (0 for the first).
    fn sim_pid(&mut self, pid: u32) -> Option<Pid> {
        let i = match self.pids.iter().position(|&p| p == pid) {
            Some(i) => i,
            None => {
                self.pids.push(pid);
                self.pids.len() - 1
            }
        };
        Pid::try_from(i).ok()
    }
}

impl<S: RecordSource> Iterator for QemuOps<S> {
    type Item = Result<Op, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(op) = self.pending[0].take() {
            self.pending[0] = self.pending[1].take();
            return Some(Ok(op));
        }
        let (r, pid) = loop {
            let r = match self.src.next()? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            let pid = self.cursor.get().pid;
            let root = *self.root.get_or_insert(pid);
            match self.children {
                Children::None if pid != root => continue,
                Children::All => {
                    let (a, b) = r.ops();
                    self.pending[0] = b;
                    return Some(Ok(a));
                }
                _ => break (r, pid),
            }
        };
        let (a, b) = r.ops();
        if self.current == Some(pid) {
            self.pending[0] = b;
            return Some(Ok(a));
        }
        let first = self.current.is_none();
        self.current = Some(pid);
        let Some(sim) = self.sim_pid(pid) else {
            return Some(Err(TraceError::BadRecord {
                path: "qemu plugin stream".into(),
                at: Location::Byte(0),
                reason: "more processes than the simulator can tell apart",
                text: pid.to_string(),
            }));
        };
        if first {
            // The first process is the simulator's initial one.
            self.pending[0] = b;
            return Some(Ok(a));
        }
        self.pending = [Some(a), b];
        Some(Ok(Op::Switch { pid: sim }))
    }
}

/// What [`qemu_ops`] returns: the ops, the reader's status and, when saving, the save summary.
pub struct QemuOpStream {
    /// The simulator ops.
    pub ops: Box<dyn Iterator<Item = Result<Op, TraceError>> + Send>,
    /// The stream status ([`QemuReader::status_handle`]).
    pub status: Arc<Mutex<QemuStatus>>,
    /// The saved trace's summary once written ([`crate::TeeSource::summary_handle`]).
    pub saved: Option<Arc<Mutex<Option<crate::WriteSummary>>>>,
}

/// A [`QemuReader`] over `input`, teed into `save` if given, as simulator ops.
pub fn qemu_ops<R: Read + Send + 'static>(
    input: R,
    name: &str,
    save: Option<TraceFileWriter>,
    children: Children,
) -> QemuOpStream {
    let reader = QemuReader::new(input, name);
    let status = reader.status_handle();
    let cursor = reader.cursor();
    match save {
        Some(w) => {
            let tee = crate::TeeSource::new(reader, w);
            let saved = Some(tee.summary_handle());
            QemuOpStream {
                ops: Box::new(QemuOps::new(tee, cursor).with_children(children)),
                status,
                saved,
            }
        }
        None => QemuOpStream {
            ops: Box::new(QemuOps::new(reader, cursor).with_children(children)),
            status,
            saved: None,
        },
    }
}

/// What [`qemu_records`] returns: the recording to save, the reader's status and the save
/// summary.
pub struct QemuRecordStream {
    /// The recording, saved as it is read by [`QemuSave::run`].
    pub records: QemuSave,
    /// The stream status ([`QemuReader::status_handle`]).
    pub status: Arc<Mutex<QemuStatus>>,
    /// The saved trace's summary once written.
    pub saved: Arc<Mutex<Option<crate::WriteSummary>>>,
}

/// A QEMU plugin stream being saved to a trace file, not simulated (`record --no-simulate`):
/// whole chunks go from the reader's expansion to the writer as packed words
/// ([`QemuReader::next_words`], [`TraceFileWriter::write_words`]), no [`Record`] is built.
pub struct QemuSave {
    reader: QemuReader<Box<dyn Read + Send>>,
    out: TraceFileWriter,
    summary: Arc<Mutex<Option<crate::WriteSummary>>>,
}

impl std::fmt::Debug for QemuSave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuSave")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl QemuSave {
    /// Reads the whole stream into the file, then finishes it (atomically: nothing is left
    /// behind on an error). Every process's and thread's records are saved, in chunk order.
    pub fn run(mut self) -> Result<crate::WriteSummary, TraceError> {
        while let Some(words) = self.reader.next_words() {
            self.out.write_words(words?)?;
        }
        let s = self.out.finish()?;
        *self.summary.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
        Ok(s)
    }
}

/// A [`QemuReader`] over `input` saved into `save`: for a recording that is only saved, not
/// simulated (`record --no-simulate`), which needs no simulator ops. Every record is saved, as
/// with [`qemu_ops`] (whose `children` choice only selects what is simulated).
pub fn qemu_records<R: Read + Send + 'static>(
    input: R,
    name: &str,
    save: TraceFileWriter,
) -> QemuRecordStream {
    let input: Box<dyn Read + Send> = Box::new(input);
    let reader = QemuReader::new(input, name);
    let status = reader.status_handle();
    let saved = Arc::default();
    QemuRecordStream {
        records: QemuSave {
            reader,
            out: save,
            summary: Arc::clone(&saved),
        },
        status,
        saved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rec::RecordKind;
    use compromis_types::{AccessKind, Gva};

    /// Builds a stream the way the plugin writes it.
    #[derive(Default)]
    struct Stream(Vec<u8>);

    impl Stream {
        fn chunk(&mut self, kind: u8, pid: u32, vcpu: u32, payload: &[u64]) -> &mut Self {
            let w0 = u64::from(MAGIC) | ((payload.len() as u64) << 32);
            let w1 = u64::from(pid) | (u64::from(vcpu) << 32) | (u64::from(kind) << 56);
            for w in [w0, w1].iter().chain(payload) {
                self.0.extend_from_slice(&w.to_le_bytes());
            }
            self
        }
        /// Hello, data records only.
        fn hello(&mut self, pid: u32) -> &mut Self {
            self.chunk(CHUNK_HELLO, pid, 0, &[PROTOCOL])
        }
        /// Hello, fetches recorded.
        fn hello_fetches(&mut self, pid: u32) -> &mut Self {
            self.chunk(CHUNK_HELLO, pid, 1, &[PROTOCOL])
        }
        fn exit(&mut self, pid: u32) -> &mut Self {
            self.chunk(CHUNK_EXIT, pid, 0, &[0])
        }
    }

    /// A data record of instruction 0 of its TB (fetches off).
    fn rec(kind: u64, addr: u64, shift: u64) -> u64 {
        data(kind, addr, shift, 0)
    }

    /// A data record of instruction `index` of its TB.
    fn data(kind: u64, addr: u64, shift: u64, index: u64) -> u64 {
        (kind << 62) | (shift << 59) | (index << 48) | addr
    }

    /// The start marker of TB `number`, and its "reached instruction `index`" marker.
    fn start(number: u64) -> u64 {
        number
    }
    fn reach(number: u64, index: u64) -> u64 {
        MARK_REACH | (index << 48) | number
    }

    /// A TB description: `number`, then (address, length) per instruction.
    fn tb(number: u64, insns: &[(u64, u64)]) -> Vec<u64> {
        let mut v = vec![number, insns.len() as u64];
        v.extend(insns.iter().map(|&(a, l)| a | (l << 56)));
        v
    }

    fn read_all(bytes: &[u8]) -> (Vec<Result<Record, TraceError>>, QemuStatus) {
        let r = QemuReader::new(bytes, "t");
        let h = r.status_handle();
        let v: Vec<_> = r.collect();
        let s = h.lock().unwrap().clone();
        (v, s)
    }

    /// Records `command` under QEMU with the embedded plugin; `None` (reason printed) without QEMU.
    fn record(
        command: &[&str],
        fetches: bool,
    ) -> Option<(Vec<Record>, QemuStatus, std::process::ExitStatus)> {
        if let Err(why) = qemu_available("qemu-x86_64".as_ref()) {
            eprintln!("skipping: {why}");
            return None;
        }
        let plugin = PluginFile::write().unwrap();
        let mut cmd = QemuCommand::new(
            plugin.path().to_owned(),
            command.iter().map(OsString::from).collect(),
        );
        cmd.fetches = fetches;
        let (rec, pipe) = cmd.spawn().unwrap();
        let r = QemuReader::new(pipe, "qemu");
        let h = r.status_handle();
        let records: Vec<Record> = r.map(Result::unwrap).collect();
        let status = rec.wait().unwrap();
        let s = h.lock().unwrap().clone();
        Some((records, s, status))
    }

    #[test]
    fn records_a_real_program_and_its_exit_status() {
        let Some((records, s, status)) = record(&["false"], true) else {
            return;
        };
        assert_eq!(status.code(), Some(1));
        assert!(records.len() > 10_000, "{}", records.len());
        assert!(s.fetches && s.exec.is_none() && s.lost == 0);
        assert_eq!(s.records(), records.len() as u64);
        assert!(s.exited.contains(&s.main_pid.unwrap()));
        // Fetches first, then data; sizes as the format allows.
        assert_eq!(records[0].kind, RecordKind::Instr);
        assert!(records.iter().all(|r| r.size > 0 && r.size <= 64));
        let Some((data, _, _)) = record(&["false"], false) else {
            return;
        };
        assert!(data.iter().all(|r| r.kind != RecordKind::Instr));
    }

    /// The raw plugin stream of `command` under QEMU; `None` (reason printed) without QEMU.
    fn raw_stream(command: &[&str]) -> Option<Vec<u8>> {
        if let Err(why) = qemu_available("qemu-x86_64".as_ref()) {
            eprintln!("skipping: {why}");
            return None;
        }
        let plugin = PluginFile::write().unwrap();
        let cmd = QemuCommand::new(
            plugin.path().to_owned(),
            command.iter().map(OsString::from).collect(),
        );
        let (rec, mut pipe) = cmd.spawn().unwrap();
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).unwrap();
        assert!(rec.wait().unwrap().success());
        Some(bytes)
    }

    /// Saving whole chunks as packed words (`record --no-simulate`) writes the very file that
    /// saving the reader's records one by one writes, on a real program's stream.
    #[test]
    fn saving_packed_chunks_writes_the_file_records_write() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("nums.txt");
        let nums: String = (0..300u64)
            .map(|i| format!("{}\n", i.wrapping_mul(0x9E37_79B9) % 100_003))
            .collect();
        std::fs::write(&input, nums).unwrap();
        let Some(bytes) = raw_stream(&["sort", "-n", input.to_str().unwrap(), "-o", "/dev/null"])
        else {
            return;
        };
        let (one, words) = (
            dir.path().join("one.ctrace"),
            dir.path().join("words.ctrace"),
        );
        let mut w = TraceFileWriter::create(&one, crate::MemTraceFormat::Native).unwrap();
        let mut records = Vec::new();
        for r in QemuReader::new(&bytes[..], "t") {
            let r = r.unwrap();
            w.write(&r).unwrap();
            records.push(r);
        }
        w.finish().unwrap();
        let save = TraceFileWriter::create(&words, crate::MemTraceFormat::Native).unwrap();
        let stream = qemu_records(std::io::Cursor::new(bytes), "t", save);
        let summary = stream.records.run().unwrap();
        assert_eq!(summary.records, records.len() as u64);
        assert_eq!(*stream.saved.lock().unwrap(), Some(summary));
        assert!(records.len() > 100_000, "{}", records.len());
        assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&words).unwrap());
        let back: Vec<Record> = crate::NativeReader::new(std::fs::File::open(&words).unwrap(), "w")
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, records);
    }

    /// A stream that breaks off saves nothing (no file, no temporary file).
    #[test]
    fn a_truncated_stream_saves_nothing() {
        let mut s = Stream::default();
        s.hello(7)
            .chunk(0, 7, 0, &[rec(1, 0x1000, 3), rec(2, 0x2000, 2)]);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.ctrace");
        let save = TraceFileWriter::create(&out, crate::MemTraceFormat::Native).unwrap();
        let stream = qemu_records(std::io::Cursor::new(s.0), "t", save);
        assert!(stream.records.run().is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(*stream.saved.lock().unwrap(), None);
    }

    #[test]
    fn a_fork_is_its_own_process_and_exec_is_stopped() {
        let Some((_, s, status)) = record(&["sh", "-c", "( : ); :"], false) else {
            return;
        };
        assert!(status.success());
        assert_eq!(s.forks.len(), 1, "{s:?}");
        assert_eq!(s.processes(), 2);
        assert_eq!(s.exited.len(), 2);
        // `exec` stops the process before the exec runs: the reader ends with an error.
        let plugin = PluginFile::write().unwrap();
        let cmd = QemuCommand::new(
            plugin.path().to_owned(),
            ["sh", "-c", "exec true"]
                .iter()
                .map(OsString::from)
                .collect(),
        );
        let (rec, pipe) = cmd.spawn().unwrap();
        let r = QemuReader::new(pipe, "qemu");
        let h = r.status_handle();
        let last = r.last().unwrap();
        assert!(last.is_err());
        assert_eq!(h.lock().unwrap().exec.map(|e| e.syscall), Some(59));
        assert_eq!(rec.wait().unwrap().code(), Some(127));
    }

    #[test]
    fn wrappers_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("wrapper");
        std::fs::write(&script, "#!/bin/sh\nexec true\n").unwrap();
        assert!(wrapper_reason(script.as_os_str()).is_some_and(|w| w.contains("#! script")));
        if find_program(OsStr::new("env")).is_ok() {
            assert!(wrapper_reason(OsStr::new("env")).is_some_and(|w| w.contains("launcher")));
        }
        if find_program(OsStr::new("true")).is_ok() {
            assert_eq!(wrapper_reason(OsStr::new("true")), None);
        }
    }

    #[test]
    fn scripts_are_refused_before_qemu_runs() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("wrapper");
        std::fs::write(&script, "#!/bin/sh\nexec true\n").unwrap();
        let e = check_elf(&script).unwrap_err().to_string();
        assert!(
            e.contains("#! script") && e.contains("--tracer lackey"),
            "{e}"
        );
        assert!(check_elf(&find_program("sh".as_ref()).unwrap()).is_ok());
    }

    #[test]
    fn programs_are_found_in_path() {
        assert_eq!(find_program("./x".as_ref()).unwrap(), PathBuf::from("./x"));
        assert!(find_program("sh".as_ref()).unwrap().is_absolute());
        let e = find_program("no-such-program-xyz".as_ref()).unwrap_err();
        assert!(e.to_string().contains("no-such-program-xyz"), "{e}");
    }

    #[test]
    fn decodes_records_and_streams() {
        let mut s = Stream::default();
        s.hello_fetches(7)
            .chunk(CHUNK_TBS, 7, 0, &tb(0, &[(0x401000, 3)]))
            .chunk(CHUNK_RECORDS, 7, 0, &[start(0), rec(1, 0x7000, 3)])
            .chunk(CHUNK_RECORDS, 7, 1, &[start(0), rec(2, 0x8000, 4)])
            .exit(7);
        let (v, st) = read_all(&s.0);
        let v: Vec<Record> = v.into_iter().map(Result::unwrap).collect();
        let fetch = Record::new(RecordKind::Instr, 0x401000, 3);
        assert_eq!(
            v,
            vec![
                fetch,
                Record::new(RecordKind::Load, 0x7000, 8),
                fetch,
                Record::new(RecordKind::Store, 0x8000, 16),
            ]
        );
        assert_eq!(st.main_pid, Some(7));
        assert!(st.fetches);
        assert_eq!(st.records(), 4);
        assert_eq!(st.streams[&StreamId { pid: 7, vcpu: 1 }], 2);
        assert_eq!(st.processes(), 1);
    }

    /// A naive oracle of the fetch expansion: replays per thread which instruction ran, as the
    /// per-instruction callbacks of protocol 1 recorded it.
    #[test]
    fn fetches_are_expanded_in_program_order_across_chunks_threads_and_forks() {
        let a = [(0x1000, 2), (0x1002, 3), (0x1005, 1), (0x1006, 5)];
        let b = [(0x2000, 4)];
        let i = |(addr, len): (u64, u64)| {
            Record::new(RecordKind::Instr, addr, u32::try_from(len).unwrap())
        };
        let ld = |addr| Record::new(RecordKind::Load, addr, 8);
        let st = |addr| Record::new(RecordKind::Store, addr, 4);
        let mut tbs = tb(0, &a);
        tbs.extend(tb(1, &b));
        let mut s = Stream::default();
        s.hello_fetches(7)
            .chunk(CHUNK_TBS, 7, 0, &tbs)
            // TB 0 in full, its data split over two chunks of thread 0, with thread 1 between.
            .chunk(CHUNK_RECORDS, 7, 0, &[start(0), data(1, 0x10, 3, 1)])
            .chunk(CHUNK_RECORDS, 7, 1, &[start(1), data(2, 0x20, 2, 0)])
            .chunk(
                CHUNK_RECORDS,
                7,
                0,
                &[data(2, 0x11, 2, 1), reach(0, 3), data(1, 0x12, 3, 3)],
            )
            // TB 0 left early after instruction 1's access (no end marker), then TB 1.
            .chunk(
                CHUNK_RECORDS,
                7,
                0,
                &[start(0), data(1, 0x13, 3, 1), start(1)],
            )
            // A marker on every instruction but a last that never runs (a ghost, see the plugin).
            .chunk(CHUNK_RECORDS, 7, 1, &[start(0), reach(0, 1), reach(0, 2)])
            // A child inherits the TBs.
            .chunk(CHUNK_FORK, 9, 0, &[7])
            .chunk(CHUNK_RECORDS, 9, 0, &[start(1)])
            .exit(9)
            .exit(7);
        let (v, _) = read_all(&s.0);
        let v: Vec<Record> = v.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            v,
            vec![
                i(a[0]),
                i(a[1]),
                ld(0x10),
                i(b[0]),
                st(0x20),
                st(0x11),
                i(a[2]),
                i(a[3]),
                ld(0x12),
                i(a[0]),
                i(a[1]),
                ld(0x13),
                i(b[0]),
                i(a[0]),
                i(a[1]),
                i(a[2]),
                i(b[0]),
            ]
        );
    }

    #[test]
    fn bad_tb_streams_are_errors() {
        let bad = |payloads: &[(u8, &[u64])]| {
            let mut s = Stream::default();
            s.hello_fetches(7);
            for (kind, p) in payloads {
                s.chunk(*kind, 7, 0, p);
            }
            s.exit(7);
            let (v, _) = read_all(&s.0);
            v.last().unwrap().as_ref().unwrap_err().to_string()
        };
        let t = tb(0, &[(0x1000, 2)]);
        assert!(bad(&[(CHUNK_RECORDS, &[start(0)])]).contains("undescribed TB"));
        assert!(
            bad(&[(CHUNK_TBS, &t), (CHUNK_RECORDS, &[reach(0, 0)])]).contains("without its start")
        );
        assert!(
            bad(&[(CHUNK_TBS, &t), (CHUNK_RECORDS, &[start(0), reach(0, 1)])])
                .contains("beyond its TB")
        );
        assert!(
            bad(&[(CHUNK_TBS, &t), (CHUNK_RECORDS, &[data(1, 0, 3, 0)])])
                .contains("outside any TB")
        );
        assert!(
            bad(&[
                (CHUNK_TBS, &t),
                (CHUNK_RECORDS, &[start(0), data(1, 0, 3, 1)])
            ])
            .contains("beyond its TB")
        );
        assert!(bad(&[(CHUNK_TBS, &[0, 2, 0x1000])]).contains("bad TB description"));
        assert!(bad(&[(CHUNK_TBS, &[0, 0])]).contains("bad TB description"));
    }

    #[test]
    fn wide_addresses_take_two_words() {
        let mut s = Stream::default();
        s.chunk(CHUNK_HELLO, 7, 0, &[PROTOCOL])
            .chunk(
                CHUNK_RECORDS,
                7,
                0,
                &[data(3, 0, 3, 0) | (1 << 47), 1 << 50],
            )
            .exit(7);
        let (v, _) = read_all(&s.0);
        let v: Vec<Record> = v.into_iter().map(Result::unwrap).collect();
        assert_eq!(v, vec![Record::new(RecordKind::Store, 1 << 50, 8)]);
    }

    #[test]
    fn stays_ended_after_the_exit_chunk() {
        // Regression: a consumer that polls again after the end (TeeSource does) must not get
        // the exit chunk's payload back as a record.
        let mut s = Stream::default();
        s.hello(7)
            .chunk(CHUNK_RECORDS, 7, 0, &[rec(1, 0x7000, 3)])
            .exit(7);
        let mut r = QemuReader::new(&s.0[..], "t");
        assert!(r.next().unwrap().is_ok());
        assert!(r.next().is_none());
        assert!(r.next().is_none());
    }

    #[test]
    fn missing_exit_chunk_is_an_error() {
        let mut s = Stream::default();
        s.hello(7).chunk(CHUNK_RECORDS, 7, 0, &[rec(1, 0x7000, 3)]);
        let (v, _) = read_all(&s.0);
        assert!(v[0].is_ok());
        let e = v.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(e.contains("before the program's exit chunk"), "{e}");
    }

    #[test]
    fn exec_is_an_error_and_recorded() {
        let mut s = Stream::default();
        s.hello(7).chunk(CHUNK_EXEC, 7, 0, &[59]).exit(7);
        let (v, st) = read_all(&s.0);
        assert_eq!(v.len(), 1);
        let e = format!("{:#}", anyhow_like(v[0].as_ref().unwrap_err()));
        assert!(e.contains("called execve"), "{e}");
        assert_eq!(
            st.exec,
            Some(ExecEvent {
                pid: 7,
                syscall: 59
            })
        );
    }

    fn anyhow_like(e: &TraceError) -> String {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(x) = src {
            s.push_str(": ");
            s.push_str(&x.to_string());
            src = x.source();
        }
        s
    }

    #[test]
    fn garbage_truncation_and_bad_records_are_errors_not_panics() {
        let (v, _) = read_all(b"this is not a chunk header");
        assert!(v[0].as_ref().unwrap_err().to_string().contains("bad magic"));
        let mut s = Stream::default();
        s.hello(7)
            .chunk(CHUNK_RECORDS, 7, 0, &[rec(3, 0, 0)])
            .exit(7);
        let (v, _) = read_all(&s.0);
        let e = v[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("wide record without its address"), "{e}");
        let mut s = Stream::default();
        s.hello(7)
            .chunk(CHUNK_RECORDS, 7, 0, &[rec(1, 0, 0), rec(1, 8, 0)]);
        for cut in 0..s.0.len() {
            let (v, _) = read_all(&s.0[..cut]);
            assert!(v.last().is_some_and(Result::is_err), "cut {cut}");
        }
        // A records chunk before the hello.
        let mut s = Stream::default();
        s.chunk(CHUNK_RECORDS, 7, 0, &[rec(1, 0, 0)]);
        let (v, _) = read_all(&s.0);
        assert!(v[0].as_ref().unwrap_err().to_string().contains("hello"));
    }

    #[test]
    fn threads_share_a_process_and_forks_switch() {
        let mut s = Stream::default();
        s.hello(7)
            .chunk(CHUNK_RECORDS, 7, 0, &[rec(1, 0x10, 3)])
            .chunk(CHUNK_RECORDS, 7, 1, &[rec(2, 0x20, 3)])
            .chunk(CHUNK_FORK, 9, 0, &[7])
            .chunk(CHUNK_RECORDS, 9, 0, &[rec(1, 0x30, 3)])
            .chunk(CHUNK_RECORDS, 7, 0, &[rec(1, 0x40, 3)])
            .exit(9)
            .exit(7);
        let QemuOpStream { ops, status, .. } = qemu_ops(
            std::io::Cursor::new(s.0.clone()),
            "t",
            None,
            Children::Separate,
        );
        let ops: Vec<Op> = ops.map(Result::unwrap).collect();
        let a = |g, kind| Op::Access {
            gva: Gva(g),
            kind,
            instrs: 0,
            dep: kind == AccessKind::Load,
        };
        assert_eq!(
            ops,
            vec![
                a(0x10, AccessKind::Load),
                a(0x20, AccessKind::Store),
                Op::Switch { pid: 1 },
                a(0x30, AccessKind::Load),
                Op::Switch { pid: 0 },
                a(0x40, AccessKind::Load),
            ]
        );
        let st = status.lock().unwrap();
        assert_eq!(st.forks, vec![(9, 7)]);
        assert_eq!(st.processes(), 2);
        assert_eq!(st.streams.len(), 3);
        // --children none: only the first process; all: one address space, no switch.
        let run = |c| -> Vec<Op> {
            qemu_ops(std::io::Cursor::new(s.0.clone()), "t", None, c)
                .ops
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(
            run(Children::None),
            vec![
                a(0x10, AccessKind::Load),
                a(0x20, AccessKind::Store),
                a(0x40, AccessKind::Load),
            ]
        );
        assert_eq!(
            run(Children::All),
            vec![
                a(0x10, AccessKind::Load),
                a(0x20, AccessKind::Store),
                a(0x30, AccessKind::Load),
                a(0x40, AccessKind::Load),
            ]
        );
    }
}
