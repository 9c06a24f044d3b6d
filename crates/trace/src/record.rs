//! What `compromis record` simulates and saves of the processes valgrind traced, and the report
//! of what it traced.
//!
//! The rules (also in `docs/traces.md`):
//! - `exec` is always followed: the trace of a process is every program it ran, in order (a
//!   wrapper script, then the program it exec'd). Each program after an exec gets a fresh
//!   simulated address space (a `Switch` to a new guest process), as the kernel gives it.
//! - [`Children::None`] (the default): only the process `record` started is simulated and saved;
//!   other processes are listed and left out.
//! - [`Children::Separate`]: every traced process (and every program it exec'd) is its own guest
//!   process with its own page tables; where their records interleave the simulator sees context
//!   switches. `--save F.ctrace` writes one trace per process: `F.ctrace` for the first, and
//!   `F.PID.ctrace` for each other.
//! - [`Children::All`]: every record of every process, as one address space (no switches).

use crate::MemTraceFormat;
use crate::error::{Location, TraceError};
use crate::process::{Image, Tagged, TracedProcess};
use crate::valgrind::ProcessStream;
use crate::write::{TraceFileWriter, WriteSummary};
use compromis_types::{Op, Pid};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

pub use crate::process::Children;

/// An unknown `--children` value.
#[derive(Debug, thiserror::Error)]
#[error("Unknown children mode {0:?}; valid values: none, separate, all")]
pub struct UnknownChildren(pub String);

impl FromStr for Children {
    type Err = UnknownChildren;
    fn from_str(s: &str) -> Result<Children, UnknownChildren> {
        Children::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|&(c, _)| c)
            .ok_or_else(|| UnknownChildren(s.to_owned()))
    }
}

/// A stream of tagged records that knows its processes ([`ProcessStream`], or a test double).
pub trait TaggedSource: Iterator<Item = Result<Tagged, TraceError>> + Send {
    /// The processes seen so far, in order of first output.
    fn processes(&self) -> &[TracedProcess];
    /// The pid of the process `record` started.
    fn root_pid(&self) -> u32;
    /// Bad lines skipped so far.
    fn skipped(&self) -> u64;
}

impl TaggedSource for ProcessStream {
    fn processes(&self) -> &[TracedProcess] {
        ProcessStream::processes(self)
    }
    fn root_pid(&self) -> u32 {
        ProcessStream::root_pid(self)
    }
    fn skipped(&self) -> u64 {
        ProcessStream::skipped(self)
    }
}

/// A trace file written by `--save`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SavedTrace {
    /// Its path.
    pub path: PathBuf,
    /// The pid whose records it holds (`None`: every simulated record, for `none` and `all`).
    pub pid: Option<u32>,
    /// Records written.
    pub records: u64,
}

/// What a recording produced, filled in as the stream ends.
#[derive(Clone, Debug, Default)]
pub struct RecordState {
    /// Every process seen, in order of first output.
    pub processes: Vec<TracedProcess>,
    /// The pid of the process `record` started.
    pub root_pid: u32,
    /// Files written by `--save`, once the stream ended cleanly.
    pub saved: Vec<SavedTrace>,
    /// Bad lines skipped.
    pub skipped: u64,
    /// The stream ended cleanly (not by an error).
    pub complete: bool,
}

/// The `--save` files: one for `none`/`all`, one per process for `separate`.
struct Saver {
    base: PathBuf,
    per_process: bool,
    /// Keyed by process index (always 0 when not per process).
    writers: BTreeMap<usize, (TraceFileWriter, PathBuf, Option<u32>)>,
}

impl Saver {
    fn write(
        &mut self,
        process: usize,
        pid: u32,
        is_root: bool,
        t: &Tagged,
    ) -> Result<(), TraceError> {
        let key = if self.per_process { process } else { 0 };
        if !self.writers.contains_key(&key) {
            let path = if is_root || !self.per_process {
                self.base.clone()
            } else {
                let taken: Vec<&PathBuf> = self.writers.values().map(|(_, p, _)| p).collect();
                sibling(&self.base, pid, &taken)
            };
            let w = TraceFileWriter::create(&path, MemTraceFormat::Native)?;
            self.writers
                .insert(key, (w, path, self.per_process.then_some(pid)));
        }
        if let Some((w, _, _)) = self.writers.get_mut(&key) {
            w.write(&t.record)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<SavedTrace>, TraceError> {
        let mut saved = Vec::new();
        for (_, (w, path, pid)) in self.writers {
            let WriteSummary { records, .. } = w.finish()?;
            saved.push(SavedTrace { path, pid, records });
        }
        Ok(saved)
    }
}

/// `F.ctrace` -> `F.PID.ctrace` (`F` -> `F.PID` without an extension), not one of `taken`.
pub fn sibling(base: &Path, pid: u32, taken: &[&PathBuf]) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = base.extension().map(|e| e.to_string_lossy().into_owned());
    let mut n = 1;
    loop {
        let tag = if n == 1 {
            pid.to_string()
        } else {
            format!("{pid}-{n}")
        };
        let name = match &ext {
            Some(e) => format!("{stem}.{tag}.{e}"),
            None => format!("{stem}.{tag}"),
        };
        let p = base.with_file_name(name);
        if !taken.contains(&&p) {
            return p;
        }
        n += 1;
    }
}

/// Where `--save` writes: the first file is created by [`SaveTo::create`], before the program
/// runs, so a bad path fails early.
pub struct SaveTo {
    path: PathBuf,
    first: TraceFileWriter,
}

impl SaveTo {
    /// Creates the first (or only) trace file, `path`, in the native format.
    pub fn create(path: &Path) -> Result<SaveTo, TraceError> {
        Ok(SaveTo {
            path: path.to_path_buf(),
            first: TraceFileWriter::create(path, MemTraceFormat::Native)?,
        })
    }
}

impl std::fmt::Debug for SaveTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveTo")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The simulator's ops of a recording, chosen by [`Children`]; tees the chosen records into the
/// `--save` files and fills a [`RecordState`] when the stream ends.
pub struct RecordOps<S> {
    src: S,
    children: Children,
    sim_pids: BTreeMap<(usize, usize), Pid>,
    /// The last (process, image) simulated and its guest pid: the common case, one lookup saved.
    last: Option<((usize, usize), Pid)>,
    /// Index of the process `record` started, once seen.
    root_index: Option<usize>,
    current: Option<Pid>,
    queue: VecDeque<Op>,
    saver: Option<Saver>,
    state: Arc<Mutex<RecordState>>,
    done: bool,
    /// When set and killed, the end of the stream is an interruption: nothing is saved.
    killer: Option<crate::supervise::KillHandle>,
}

impl<S> std::fmt::Debug for RecordOps<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordOps")
            .field("children", &self.children)
            .finish_non_exhaustive()
    }
}

impl<S: TaggedSource> RecordOps<S> {
    /// Ops of `src` under `children`; with `save`, the records simulated are also written in
    /// the native format (with `separate`, one file per process).
    pub fn new(src: S, children: Children, save: Option<SaveTo>) -> RecordOps<S> {
        let saver = save.map(|SaveTo { path, first }| {
            let pid = (children == Children::Separate).then(|| src.root_pid());
            let mut writers = BTreeMap::new();
            writers.insert(0, (first, path.clone(), pid));
            Saver {
                base: path,
                per_process: children == Children::Separate,
                writers,
            }
        });
        let state = Arc::new(Mutex::new(RecordState {
            root_pid: src.root_pid(),
            ..RecordState::default()
        }));
        RecordOps {
            src,
            children,
            sim_pids: BTreeMap::new(),
            last: None,
            root_index: None,
            current: None,
            queue: VecDeque::new(),
            saver,
            state,
            killer: None,
            done: false,
        }
    }

    /// Where the outcome appears when the stream ends.
    pub fn state(&self) -> Arc<Mutex<RecordState>> {
        self.state.clone()
    }

    /// Whether process `p` is the one `record` started. Valgrind starts it first, so it is the
    /// first process seen with the root pid (found once, then remembered).
    fn is_root(&mut self, p: usize) -> bool {
        if self.root_index.is_none() {
            let root = self.src.root_pid();
            self.root_index = self.src.processes().iter().position(|q| q.pid == root);
        }
        self.root_index == Some(p)
    }

    /// Queues the ops of one tagged record, or nothing if it is not simulated.
    fn take(&mut self, t: &Tagged) -> Result<(), TraceError> {
        let root = self.is_root(t.process);
        if self.children == Children::None && !root {
            return Ok(());
        }
        let pid = self.src.processes()[t.process].pid;
        // Separate: every image its own process. None: the root's images, one after the other.
        // All: one address space.
        let key = match self.children {
            Children::All => (0, 0),
            Children::None | Children::Separate => (t.process, t.image),
        };
        let next = self.sim_pids.len();
        let sim_pid = match self.last.filter(|(k, _)| *k == key) {
            Some((_, p)) => p,
            None => match self.sim_pids.get(&key) {
                Some(&p) => p,
                None => {
                    let p = Pid::try_from(next).map_err(|_| TraceError::BadRecord {
                    path: "valgrind output".into(),
                    at: Location::Line(0),
                    reason: "More processes and execs than the simulator's 65536 guest processes",
                    text: format!("pid {pid}"),
                })?;
                    self.sim_pids.insert(key, p);
                    p
                }
            },
        };
        self.last = Some((key, sim_pid));
        // The guest starts in its process 0: no switch before the first access.
        if self.current.is_some_and(|c| c != sim_pid) || (self.current.is_none() && sim_pid != 0) {
            self.queue.push_back(Op::Switch { pid: sim_pid });
        }
        self.current = Some(sim_pid);
        let (a, b) = t.record.ops();
        self.queue.push_back(a);
        if let Some(b) = b {
            self.queue.push_back(b);
        }
        if let Some(s) = &mut self.saver {
            s.write(t.process, pid, root, t)?;
        }
        Ok(())
    }

    /// Ends the stream with an interruption error, saving nothing (the `--save` destination is
    /// left as it was), when `killer` has killed the tracer.
    pub fn stop_when_killed(mut self, killer: crate::supervise::KillHandle) -> Self {
        self.killer = Some(killer);
        self
    }

    fn end(&mut self) -> Result<(), TraceError> {
        if self.killer.as_ref().is_some_and(|k| k.was_killed()) {
            // Dropping the writers removes their temporary files.
            self.saver = None;
            return Err(TraceError::Io {
                path: "tracer output".into(),
                at: Location::Byte(0),
                source: std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"),
            });
        }
        let saved = match self.saver.take() {
            Some(s) => s.finish()?,
            None => Vec::new(),
        };
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.processes = self.src.processes().to_vec();
        st.saved = saved;
        st.skipped = self.src.skipped();
        st.complete = true;
        Ok(())
    }

    fn snapshot(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.processes = self.src.processes().to_vec();
        st.skipped = self.src.skipped();
    }
}

impl<S: TaggedSource> Iterator for RecordOps<S> {
    type Item = Result<Op, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(op) = self.queue.pop_front() {
                return Some(Ok(op));
            }
            if self.done {
                return None;
            }
            match self.src.next() {
                Some(Ok(t)) => {
                    if let Err(e) = self.take(&t) {
                        self.done = true;
                        self.snapshot();
                        return Some(Err(e));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.snapshot();
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    if let Err(e) = self.end() {
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// How the process `record` started ended, as far as the report needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootExit {
    /// It exited (with this code).
    Code(i32),
    /// It was killed by a signal (valgrind prints no exit report then).
    Signal,
}

/// One process in the report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProcessReport {
    /// Its pid.
    pub pid: u32,
    /// Its parent, when known.
    pub parent: Option<u32>,
    /// Started by a fork (without a command line of its own before any exec).
    pub forked: bool,
    /// Whether its records were simulated.
    pub simulated: bool,
    /// Its records, every image.
    pub records: u64,
    /// The programs it ran, in order.
    pub images: Vec<Image>,
}

/// What `record` traced: the processes, the choice of `--children`, warnings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecordReport {
    /// The `--children` choice.
    pub children: Children,
    /// Every traced process, in order of first output.
    pub processes: Vec<ProcessReport>,
    /// Records simulated.
    pub simulated_records: u64,
    /// Things the user should know (an exec not followed, a trace mostly of a wrapper...).
    pub warnings: Vec<String>,
    /// Files written by `--save`.
    pub saved: Vec<SavedTrace>,
}

/// Share of a process's records above which its wrappers "make nearly all" of its trace.
const WRAPPER_SHARE: f64 = 0.9;

impl RecordReport {
    /// The report of `state`, given how the root process ended.
    pub fn new(children: Children, state: &RecordState, root_exit: RootExit) -> RecordReport {
        let root = state.processes.iter().position(|p| p.pid == state.root_pid);
        let mut warnings = Vec::new();
        let processes: Vec<ProcessReport> = state
            .processes
            .iter()
            .enumerate()
            .map(|(i, p)| ProcessReport {
                pid: p.pid,
                parent: p.parent,
                forked: p.forked,
                simulated: children != Children::None || Some(i) == root,
                records: p.records(),
                images: p.images.clone(),
            })
            .collect();
        for (i, p) in state.processes.iter().enumerate() {
            let is_root = Some(i) == root;
            if !(is_root || children != Children::None) || p.images.is_empty() || p.exited() {
                continue;
            }
            let cmd = describe(p);
            if is_root {
                if root_exit != RootExit::Signal {
                    warnings.push(format!(
                        "pid {} ({cmd}) ended by exec'ing a program valgrind did not follow: its trace stops at that exec",
                        p.pid
                    ));
                }
            } else {
                warnings.push(format!(
                    "pid {} ({cmd}) ended without valgrind's exit report: it exec'd a program valgrind did not follow, or was killed",
                    p.pid
                ));
            }
        }
        if let Some(r) = root {
            let p = &state.processes[r];
            let total = p.records();
            let last = p.images.last().map_or(0, |i| i.records);
            let before = total - last;
            let wrapper_heavy =
                p.images.len() > 1 && total > 0 && ratio(before, total) >= WRAPPER_SHARE;
            if wrapper_heavy {
                let wrappers: Vec<&str> = p.images[..p.images.len() - 1]
                    .iter()
                    .map(|i| i.command.as_deref().unwrap_or("(forked)"))
                    .collect();
                warnings.push(format!(
                    "{:.1}% of the records of pid {} come from the programs it ran before its last exec ({})",
                    100.0 * ratio(before, total),
                    p.pid,
                    wrappers.join(", ")
                ));
            }
        }
        let simulated_records: u64 = processes
            .iter()
            .filter(|p| p.simulated)
            .map(|p| p.records)
            .sum();
        // A launcher that forks the program instead of exec'ing it (`/usr/bin/time`, a script
        // that does not end with exec): the simulated process is the launcher.
        let total: u64 = processes.iter().map(|p| p.records).sum();
        let biggest_left_out = processes
            .iter()
            .zip(&state.processes)
            .filter(|(r, _)| !r.simulated)
            .max_by_key(|(r, _)| r.records);
        if let Some((r, p)) = biggest_left_out
            && total > 0
            && ratio(total - simulated_records, total) >= WRAPPER_SHARE
        {
            warnings.push(format!(
                "{:.1}% of the records traced come from processes left out (the largest: pid {}, {}, {} records); --children separate or all simulates them",
                100.0 * ratio(total - simulated_records, total),
                r.pid,
                describe(p),
                r.records
            ));
        }
        RecordReport {
            children,
            processes,
            simulated_records,
            warnings,
            saved: state.saved.clone(),
        }
    }
}

/// `count / total` for a report (exact enough for percentages).
#[allow(clippy::cast_precision_loss)]
fn ratio(count: u64, total: u64) -> f64 {
    count as f64 / total.max(1) as f64
}

/// A process's last command line, or how it started.
pub fn describe(p: &TracedProcess) -> String {
    match p.last_command() {
        Some(c) => c.to_owned(),
        None => match p.parent {
            Some(pp) => format!("forked from pid {pp}"),
            None => "forked".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Demux;
    use compromis_types::{AccessKind, Gva};

    /// A recorded stream: all chunks fed up front.
    struct Fed {
        demux: Demux,
        root: u32,
    }

    impl Fed {
        fn new(root: u32, chunks: &[(u32, &str)]) -> Fed {
            let mut demux = Demux::new("t", false);
            for (pid, text) in chunks {
                demux.feed(*pid, text.as_bytes());
            }
            demux.finish();
            Fed { demux, root }
        }
    }

    impl Iterator for Fed {
        type Item = Result<Tagged, TraceError>;
        fn next(&mut self) -> Option<Self::Item> {
            self.demux.pop()
        }
    }

    impl TaggedSource for Fed {
        fn processes(&self) -> &[TracedProcess] {
            self.demux.processes()
        }
        fn root_pid(&self) -> u32 {
            self.root
        }
        fn skipped(&self) -> u64 {
            self.demux.skipped()
        }
    }

    /// A shell that forks a child (pid 11), which runs a bit, then the shell execs `prog`.
    const CHUNKS: [(u32, &str); 4] = [
        (10, "==10== Command: sh -c x\nI  100,1\n"),
        (11, "I  200,1\n==11== Exit code: 0\n"),
        (10, "==10== Command: prog\nI  300,1\n S 308,8\n"),
        (10, "==10== Exit code: 0\n"),
    ];

    fn run(children: Children) -> (Vec<Op>, RecordState) {
        let ops = RecordOps::new(Fed::new(10, &CHUNKS), children, None);
        let state = ops.state();
        let v = ops.map(Result::unwrap).collect();
        let st = state.lock().unwrap().clone();
        (v, st)
    }

    fn fetch(a: u64) -> Op {
        Op::Access {
            gva: Gva(a),
            kind: AccessKind::Fetch,
            instrs: 1,
            dep: false,
        }
    }

    #[test]
    fn none_keeps_the_root_and_gives_each_exec_a_fresh_address_space() {
        let (ops, st) = run(Children::None);
        assert_eq!(
            ops,
            vec![
                fetch(0x100),
                Op::Switch { pid: 1 },
                fetch(0x300),
                Op::Access {
                    gva: Gva(0x308),
                    kind: AccessKind::Store,
                    instrs: 0,
                    dep: false
                },
            ]
        );
        assert!(st.complete);
        assert_eq!(st.processes.len(), 2);
    }

    #[test]
    fn separate_switches_between_processes_and_all_mixes_them() {
        let (ops, _) = run(Children::Separate);
        let switches: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Switch { pid } => Some(*pid),
                _ => None,
            })
            .collect();
        // sh = 0, the child = 1, back to sh's exec'd prog = 2.
        assert_eq!(switches, vec![1, 2]);
        assert_eq!(ops.len(), 4 + 2);
        let (ops, _) = run(Children::All);
        assert!(!ops.iter().any(|o| matches!(o, Op::Switch { .. })));
        assert_eq!(ops.len(), 4);
    }

    #[test]
    fn separate_saves_one_trace_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("t.ctrace");
        let ops = RecordOps::new(
            Fed::new(10, &CHUNKS),
            Children::Separate,
            Some(SaveTo::create(&base).unwrap()),
        );
        let state = ops.state();
        assert_eq!(ops.map(Result::unwrap).count(), 6);
        let st = state.lock().unwrap().clone();
        let got: Vec<(String, Option<u32>, u64)> = st
            .saved
            .iter()
            .map(|s| {
                (
                    s.path.file_name().unwrap().to_string_lossy().into_owned(),
                    s.pid,
                    s.records,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("t.ctrace".to_owned(), Some(10), 3),
                ("t.11.ctrace".to_owned(), Some(11), 1)
            ]
        );
        assert!(dir.path().join("t.11.ctrace").exists());
    }

    #[test]
    fn report_warns_about_an_unfollowed_exec_and_a_wrapper_heavy_trace() {
        let mut st = RecordState {
            root_pid: 10,
            processes: vec![TracedProcess {
                pid: 10,
                parent: Some(1),
                forked: false,
                images: vec![Image {
                    command: Some("wrapper".into()),
                    records: 500,
                    exited: false,
                }],
            }],
            ..RecordState::default()
        };
        let r = RecordReport::new(Children::None, &st, RootExit::Code(0));
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("did not follow"), "{:?}", r.warnings);
        // Killed: no exec to warn about.
        let r = RecordReport::new(Children::None, &st, RootExit::Signal);
        assert!(r.warnings.is_empty());
        st.processes[0].images.push(Image {
            command: Some("prog".into()),
            records: 5,
            exited: true,
        });
        let r = RecordReport::new(Children::None, &st, RootExit::Code(0));
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].contains("99.0% of the records of pid 10"),
            "{:?}",
            r.warnings
        );
        assert_eq!(r.simulated_records, 505);
    }

    #[test]
    fn report_warns_when_the_simulated_process_is_a_launcher_that_forked_the_program() {
        let img = |c: &str, records| Image {
            command: Some(c.into()),
            records,
            exited: true,
        };
        let st = RecordState {
            root_pid: 10,
            processes: vec![
                TracedProcess {
                    pid: 10,
                    parent: None,
                    forked: false,
                    images: vec![img("/usr/bin/time prog", 100)],
                },
                TracedProcess {
                    pid: 11,
                    parent: Some(10),
                    forked: true,
                    images: vec![
                        Image {
                            command: None,
                            records: 10,
                            exited: false,
                        },
                        img("prog", 5000),
                    ],
                },
            ],
            ..RecordState::default()
        };
        let r = RecordReport::new(Children::None, &st, RootExit::Code(0));
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].contains("98.0% of the records traced come from processes left out")
                && r.warnings[0].contains("pid 11, prog, 5010 records"),
            "{:?}",
            r.warnings
        );
        assert_eq!(r.simulated_records, 100);
        assert!(!r.processes[1].simulated);
        let r = RecordReport::new(Children::Separate, &st, RootExit::Code(0));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.simulated_records, 5110);
    }

    #[test]
    fn children_names_round_trip_and_errors_list_values() {
        for (c, n) in Children::ALL {
            assert_eq!(n.parse::<Children>().unwrap(), c);
            assert_eq!(c.to_string(), n);
        }
        let e = "some".parse::<Children>().unwrap_err().to_string();
        assert!(e.contains("none, separate, all"), "{e}");
    }

    #[test]
    fn sibling_names() {
        let b = PathBuf::from("/x/py.ctrace");
        assert_eq!(sibling(&b, 7, &[]), PathBuf::from("/x/py.7.ctrace"));
        let taken = PathBuf::from("/x/py.7.ctrace");
        assert_eq!(sibling(&b, 7, &[&taken]), PathBuf::from("/x/py.7-2.ctrace"));
        assert_eq!(
            sibling(Path::new("t"), 3, &[]),
            PathBuf::from("3").with_file_name("t.3")
        );
    }
}
