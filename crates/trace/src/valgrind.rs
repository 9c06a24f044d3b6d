//! Running a program under valgrind lackey and streaming its trace, process by process
//! (`compromis record`).
//!
//! valgrind runs with `--trace-children=yes`, so it follows `exec` (wrapper scripts, `env`,
//! `nice`, `time`...) and traces the children the program starts. Every traced process writes
//! its log (lackey's trace lines and valgrind's `==PID==` commentary) to `--log-fd=N`, one end
//! of a Unix socket pair whose other end compromis reads with `SO_PASSCRED`: each chunk comes
//! with the pid of the process that wrote it, and the kernel never merges chunks of two writers,
//! so [`Demux`] attributes every line to its process (no torn lines, no record given to the
//! wrong process). The trace never touches the disk; the program's own stdin, stdout and stderr
//! stay inherited and usable.
//!
//! With [`Children::None`] forked children are silent until they exec
//! (`--child-silent-after-fork=yes`); what they run after an exec is traced by valgrind and left
//! out by [`crate::record`]. With `separate` and `all`, forked children are traced too.
//!
//! The stream ends at end-of-file (every traced process is gone), or earlier once the traced
//! process has exited and, with `separate`/`all`, no process seen is still running under
//! valgrind: a descendant that is not traced (valgrind ran it natively) and still holds the
//! socket does not keep `record` waiting. If the stream ends before end-of-file, the socket is
//! handed to a `cat > /dev/null` so that descendants still writing are not killed by `SIGPIPE`.
//!
//! Dropping a [`Recording`] (or [`KillHandle::kill`], e.g. from a Ctrl-C handler) kills valgrind
//! and waits for it: no process is left behind.

use crate::error::{Location, TraceError};
use crate::process::Children;
use crate::process::{Demux, Tagged, TracedProcess};
pub use crate::supervise::{KillHandle, Recording};
use crate::sys;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the reader waits for output before it checks whether the stream should end.
const READ_TICK: Duration = Duration::from_millis(20);

/// An error starting or waiting for valgrind.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No command was given.
    #[error("No command to record")]
    NoCommand,
    /// The socket could not be created.
    #[error("Cannot create the trace socket")]
    Socket(#[source] std::io::Error),
    /// The program's output file could not be created.
    #[error("Cannot open the program's output file")]
    ProgramOutput(#[source] std::io::Error),
    /// valgrind could not be started.
    #[error("Cannot start {valgrind:?} (is valgrind installed?)")]
    Spawn {
        /// The valgrind executable.
        valgrind: OsString,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// How to run the program.
#[derive(Clone, Debug)]
pub struct LackeyCommand {
    /// The valgrind executable (default `valgrind`, found in `PATH`).
    pub valgrind: OsString,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// What to do with child processes.
    pub children: Children,
    /// Programs valgrind must not trace into (`--trace-children-skip` patterns): they run
    /// natively and their accesses are missing from the trace.
    pub no_follow: Vec<String>,
    /// Count bad lines instead of stopping at the first.
    pub skip_bad_records: bool,
    /// Where the program's stdout and stderr go.
    pub program_output: crate::ProgramOutput,
}

impl LackeyCommand {
    /// Runs `command` (program then arguments) under `valgrind` from `PATH`, following exec,
    /// children not simulated ([`Children::None`]).
    pub fn new(command: Vec<OsString>) -> LackeyCommand {
        LackeyCommand {
            valgrind: "valgrind".into(),
            command,
            children: Children::None,
            no_follow: Vec::new(),
            skip_bad_records: false,
            program_output: crate::ProgramOutput::Inherit,
        }
    }

    /// The valgrind arguments before the program, given the log descriptor.
    fn valgrind_args(&self, fd: i32) -> Vec<OsString> {
        let silent = if self.children == Children::None {
            "yes"
        } else {
            "no"
        };
        let mut args: Vec<OsString> = vec![
            "--tool=lackey".into(),
            "--trace-mem=yes".into(),
            // No gdbserver: its FIFOs (vgdb-pipe-*) would stay in $TMPDIR when valgrind is killed.
            "--vgdb=no".into(),
            "--trace-children=yes".into(),
            format!("--child-silent-after-fork={silent}").into(),
            format!("--log-fd={fd}").into(),
        ];
        if !self.no_follow.is_empty() {
            args.push(format!("--trace-children-skip={}", self.no_follow.join(",")).into());
        }
        args
    }

    /// Starts valgrind. Returns the recording (owning the process) and the stream of records,
    /// each tagged with the process that produced it.
    pub fn spawn(&self) -> Result<(Recording, ProcessStream), RecordError> {
        if self.command.is_empty() {
            return Err(RecordError::NoCommand);
        }
        let (reader, writer) = sys::cred_socketpair().map_err(RecordError::Socket)?;
        reader
            .set_read_timeout(Some(READ_TICK))
            .map_err(RecordError::Socket)?;
        let fd = writer.as_raw_fd();
        let (stdout, stderr) = self
            .program_output
            .stdio()
            .map_err(RecordError::ProgramOutput)?;
        let mut cmd = Command::new(&self.valgrind);
        cmd.args(self.valgrind_args(fd))
            .arg("--")
            .args(&self.command)
            .stdin(Stdio::inherit())
            .stdout(stdout)
            .stderr(stderr);
        sys::inherit_fd(&mut cmd, fd);
        let child = cmd.spawn().map_err(|source| RecordError::Spawn {
            valgrind: self.valgrind.clone(),
            source,
        })?;
        // Only valgrind and its descendants hold the write end now: end-of-file when they are gone.
        drop(writer);
        let root = child.id();
        let root_done = Arc::new(AtomicBool::new(false));
        let done = root_done.clone();
        let recording = Recording::start(child, move || done.store(true, Ordering::SeqCst));
        let stream = ProcessStream {
            sock: Some(reader),
            demux: Demux::new("valgrind output", self.skip_bad_records),
            buf: vec![0; 1 << 16],
            root,
            children: self.children,
            root_done,
            killed: recording.kill_handle(),
            ended: false,
            eof: false,
            last_pass: false,
            received: 0,
        };
        Ok((recording, stream))
    }
}

/// The records of every traced process, in the order they arrive, each tagged with its process
/// and image ([`ProcessStream::processes`]).
#[derive(Debug)]
pub struct ProcessStream {
    sock: Option<UnixStream>,
    demux: Demux,
    buf: Vec<u8>,
    root: u32,
    children: Children,
    root_done: Arc<AtomicBool>,
    killed: KillHandle,
    ended: bool,
    eof: bool,
    /// The end condition held at the last empty read.
    last_pass: bool,
    /// Bytes received so far.
    received: u64,
}

impl ProcessStream {
    /// The pid of the process valgrind was started as (the traced program's).
    pub fn root_pid(&self) -> u32 {
        self.root
    }

    /// The processes seen so far, in order of first output.
    pub fn processes(&self) -> &[TracedProcess] {
        self.demux.processes()
    }

    /// Bad lines skipped so far.
    pub fn skipped(&self) -> u64 {
        self.demux.skipped()
    }

    /// Whether the stream may end now that nothing is waiting in the socket.
    fn may_end(&self) -> bool {
        if !self.root_done.load(Ordering::SeqCst) {
            return false;
        }
        match self.children {
            Children::None => true,
            // A process still running under valgrind may still write.
            Children::Separate | Children::All => !self.demux.processes().iter().any(|p| {
                !p.exited()
                    && sys::process_exe(p.pid).is_some_and(|exe| {
                        exe.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("lackey-"))
                    })
            }),
        }
    }
}

impl Iterator for ProcessStream {
    type Item = Result<Tagged, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.demux.pop() {
                return Some(r);
            }
            if self.ended {
                return None;
            }
            if self.killed.was_killed() {
                // Stopped (Ctrl-C): an error, so no partial trace passes for a whole one.
                self.ended = true;
                return Some(Err(self.error(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "valgrind was stopped",
                ))));
            }
            let sock = self.sock.as_ref()?;
            match sys::recv_with_pid(sock, &mut self.buf) {
                Ok((0, _)) => {
                    self.eof = true;
                    self.ended = true;
                    self.demux.finish();
                }
                Ok((n, pid)) => {
                    self.received += n as u64;
                    // Without credentials (never seen on Linux) the bytes are the root's.
                    let pid = pid.unwrap_or(self.root);
                    if !self.demux.knows(pid) {
                        let parent = sys::parent_of(pid);
                        self.demux.add_process(pid, parent);
                    }
                    self.demux.feed(pid, &self.buf[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    // The end condition must hold before one more empty read: whatever the root
                    // wrote before it was reaped is then queued in the socket and has been read.
                    if self.may_end() {
                        if self.last_pass {
                            self.ended = true;
                            self.demux.finish();
                        }
                        self.last_pass = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.ended = true;
                    return Some(Err(self.error(source)));
                }
            }
        }
    }
}

impl ProcessStream {
    fn error(&self, source: std::io::Error) -> TraceError {
        TraceError::Io {
            path: "valgrind output".into(),
            at: Location::Byte(self.received),
            source,
        }
    }
}

impl Drop for ProcessStream {
    fn drop(&mut self) {
        if let Some(sock) = self.sock.take()
            && !self.eof
        {
            // Descendants may still hold the other end: let them write without SIGPIPE.
            let _ = Command::new("cat")
                .stdin(Stdio::from(OwnedFd::from(sock)))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
    }
}

/// Whether `valgrind` can be run (for skipping tests and friendlier errors).
pub fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rec::RecordKind;
    use std::collections::BTreeMap;

    fn valgrind_missing() -> bool {
        let missing = !valgrind_available();
        if missing {
            eprintln!("valgrind not installed: skipping");
        }
        missing
    }

    #[test]
    fn empty_command_is_an_error() {
        assert!(matches!(
            LackeyCommand::new(vec![]).spawn(),
            Err(RecordError::NoCommand)
        ));
    }

    #[test]
    fn missing_valgrind_is_an_error() {
        let mut c = LackeyCommand::new(vec!["true".into()]);
        c.valgrind = "/nonexistent/valgrind".into();
        let e = c.spawn().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/valgrind"), "{e}");
    }

    #[test]
    fn records_false_and_reports_exit_status() {
        if valgrind_missing() {
            return;
        }
        let (rec, mut stream) = LackeyCommand::new(vec!["/bin/false".into()])
            .spawn()
            .unwrap();
        let n = stream.by_ref().map(Result::unwrap).count();
        assert!(n > 1000, "only {n} records");
        let status = rec.wait().unwrap();
        assert_eq!(status.code(), Some(1));
        let p = stream.processes();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pid, stream.root_pid());
        assert_eq!(p[0].images.len(), 1);
        assert_eq!(p[0].images[0].command.as_deref(), Some("/bin/false"));
        assert!(p[0].images[0].exited);
        assert_eq!(p[0].records(), n as u64);
    }

    #[test]
    fn follows_exec_of_env_in_the_same_process() {
        if valgrind_missing() {
            return;
        }
        let cmd = ["env", "A=1", "/bin/true"].map(OsString::from).to_vec();
        let (rec, mut stream) = LackeyCommand::new(cmd).spawn().unwrap();
        let n = stream.by_ref().map(Result::unwrap).count();
        assert!(rec.wait().unwrap().success());
        let p = stream.processes();
        assert_eq!(p.len(), 1, "{p:?}");
        let cmds: Vec<_> = p[0].images.iter().map(|i| i.command.as_deref()).collect();
        assert_eq!(cmds, vec![Some("env A=1 /bin/true"), Some("/bin/true")]);
        assert!(!p[0].images[0].exited);
        assert!(p[0].images[1].exited);
        assert!(p[0].images[1].records > 1000, "{p:?}");
        assert_eq!(p[0].records(), n as u64);
    }

    #[test]
    fn kill_ends_the_stream() {
        if valgrind_missing() {
            return;
        }
        let (rec, mut stream) = LackeyCommand::new(vec!["sleep".into(), "30".into()])
            .spawn()
            .unwrap();
        let h = rec.kill_handle();
        // Read a little, then kill: the stream must end (no hang) and the status must be a signal.
        let _ = stream.by_ref().take(100).count();
        h.kill();
        let rest: Vec<_> = stream.collect();
        assert!(
            rest.last().is_some_and(Result::is_err),
            "a stopped stream ends with an error"
        );
        let status = rec.wait().unwrap();
        assert!(status.code().is_none(), "{status:?}");
        assert!(h.was_killed());
    }

    /// Compiles `tests/data/fork4.c`, or says why not.
    fn fork4(dir: &std::path::Path) -> Option<std::path::PathBuf> {
        let src = dir.join("fork4.c");
        std::fs::write(&src, include_str!("../tests/data/fork4.c")).ok()?;
        let bin = dir.join("fork4");
        let ok = Command::new("cc")
            .arg("-O1")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("no C compiler (cc): skipping");
        }
        ok.then_some(bin)
    }

    /// Four forked workers writing concurrently: every record is given to the process that made
    /// it. Each worker's stores into the shared static area fall in its own slice, exactly 65536.
    #[test]
    fn forked_workers_are_attributed_without_torn_lines() {
        if valgrind_missing() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let Some(bin) = fork4(dir.path()) else {
            return;
        };
        let addr_file = dir.path().join("addr");
        let mut cmd = LackeyCommand::new(vec![bin.into(), addr_file.clone().into()]);
        cmd.children = Children::Separate;
        let (rec, mut stream) = cmd.spawn().unwrap();
        let mut stores: BTreeMap<(usize, u64), u64> = BTreeMap::new();
        let mut tagged = Vec::new();
        for t in stream.by_ref() {
            tagged.push(t.unwrap());
        }
        assert!(rec.wait().unwrap().success());
        let area =
            u64::from_str_radix(std::fs::read_to_string(&addr_file).unwrap().trim(), 16).unwrap();
        let slice = 1u64 << 20;
        for t in &tagged {
            let a = t.record.addr.0;
            if t.record.kind == RecordKind::Store && (area..area + 4 * slice).contains(&a) {
                *stores.entry((t.process, (a - area) / slice)).or_default() += 1;
            }
        }
        let p = stream.processes();
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(!p[0].forked && p[1..].iter().all(|c| c.forked && c.exited()));
        assert!(p[1..].iter().all(|c| c.parent == Some(p[0].pid)), "{p:?}");
        // Processes 1..=4 each wrote one distinct slice, 4 x 16384 stores; the parent none.
        let mut slices: Vec<u64> = stores.keys().map(|&(_, s)| s).collect();
        slices.sort_unstable();
        assert_eq!(slices, vec![0, 1, 2, 3], "{stores:?}");
        assert!(stores.keys().all(|&(proc, _)| proc >= 1), "{stores:?}");
        assert!(stores.values().all(|&n| n == 65536), "{stores:?}");
        let procs: std::collections::BTreeSet<usize> = stores.keys().map(|&(p, _)| p).collect();
        assert_eq!(procs.len(), 4);
    }

    /// With `none`, forked children are silent: only the parent's records arrive.
    #[test]
    fn forked_workers_are_silent_without_children() {
        if valgrind_missing() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let Some(bin) = fork4(dir.path()) else {
            return;
        };
        let (rec, mut stream) = LackeyCommand::new(vec![bin.into()]).spawn().unwrap();
        let n = stream.by_ref().map(Result::unwrap).count();
        assert!(rec.wait().unwrap().success());
        assert_eq!(stream.processes().len(), 1, "{:?}", stream.processes());
        assert_eq!(stream.processes()[0].records(), n as u64);
    }

    /// A descendant valgrind does not trace (`--trace-children-skip`) holds the socket; the
    /// stream still ends when the traced process exits.
    #[test]
    fn untraced_descendant_does_not_hold_the_stream() {
        if valgrind_missing() {
            return;
        }
        for children in [Children::None, Children::Separate] {
            let cmd = ["sh", "-c", "sleep 20 & exit 0"]
                .map(OsString::from)
                .to_vec();
            let mut c = LackeyCommand::new(cmd);
            c.children = children;
            c.no_follow = vec!["*sleep".into()];
            let start = std::time::Instant::now();
            let (rec, stream) = c.spawn().unwrap();
            let n = stream.map(Result::unwrap).count();
            assert!(rec.wait().unwrap().success());
            assert!(n > 1000);
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{children}: {:?}",
                start.elapsed()
            );
        }
    }
}
