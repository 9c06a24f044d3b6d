//! Which process wrote which record: valgrind output of several processes, demultiplexed.
//!
//! `compromis record` runs valgrind with `--trace-children=yes`, so every process of the traced
//! program writes lackey lines to one socket. The socket tells, for every chunk it delivers, the
//! pid of its writer (see `sys.rs`); [`Demux`] reassembles each process's lines on their own (a
//! line split over two chunks of one process is joined, never with another process's bytes) and
//! keeps a [`TracedProcess`] per pid:
//!
//! - valgrind's preamble line `==PID== Command: ...` starts an [`Image`]: the first one of a
//!   process, or a new one after an `exec` (valgrind follows the exec in the same pid and prints
//!   a new preamble);
//! - `==PID== Parent PID: N` names the parent;
//! - lackey's last line, `==PID== Exit code: N`, ends the image: an image without it ended by
//!   an exec that valgrind did not follow, or was killed;
//! - records of a pid that printed no preamble come from a child forked without exec (valgrind
//!   keeps tracing it in the same instance, `--child-silent-after-fork=no`).

use crate::error::{Location, TraceError, excerpt};
use crate::lackey::{Line, MAX_LINE, parse_line};
use crate::rec::Record;
use std::collections::{BTreeMap, VecDeque};

/// What to do with the processes the traced program starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Children {
    /// Simulate only the process `record` started (through its execs).
    #[default]
    None,
    /// Simulate each traced process as its own guest process; save one trace per process.
    Separate,
    /// Simulate every record of every process in one address space.
    All,
}

impl Children {
    /// Every value, with the name [`FromStr`] accepts.
    pub const ALL: [(Children, &'static str); 3] = [
        (Children::None, "none"),
        (Children::Separate, "separate"),
        (Children::All, "all"),
    ];

    /// The name of the value.
    pub fn name(self) -> &'static str {
        match self {
            Children::None => "none",
            Children::Separate => "separate",
            Children::All => "all",
        }
    }
}

impl std::fmt::Display for Children {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One program run by a process: from its start (or the exec that loaded it) to its exit (or the
/// next exec).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Image {
    /// The command line valgrind printed (`Command: ...`, arguments escaped as valgrind does);
    /// `None` for the part of a forked child before any exec (it runs its parent's program).
    pub command: Option<String>,
    /// Records this image produced.
    pub records: u64,
    /// Whether lackey printed its exit report (`Exit code: ...`; the code it prints is not the
    /// program's, valgrind 3.19 prints 0): `false` if the image ended otherwise (an exec
    /// valgrind did not follow, a kill) or had not ended yet.
    pub exited: bool,
}

/// A process whose output valgrind sent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TracedProcess {
    /// Its pid.
    pub pid: u32,
    /// Its parent's pid, when known.
    pub parent: Option<u32>,
    /// Started by a fork of a traced process (its first image has no command of its own).
    pub forked: bool,
    /// Its images in order: more than one when it exec'd.
    pub images: Vec<Image>,
}

impl TracedProcess {
    /// Records of every image.
    pub fn records(&self) -> u64 {
        self.images.iter().map(|i| i.records).sum()
    }

    /// The last command line this process ran, if any image had one.
    pub fn last_command(&self) -> Option<&str> {
        self.images.iter().rev().find_map(|i| i.command.as_deref())
    }

    /// Whether its last image ended with lackey's exit report.
    pub fn exited(&self) -> bool {
        self.images.last().is_some_and(|i| i.exited)
    }
}

/// A record and where it came from: indices into [`Demux::processes`] and the process's images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tagged {
    /// Index of the process in [`Demux::processes`] (order of first output).
    pub process: usize,
    /// Index of the image in that process's [`TracedProcess::images`].
    pub image: usize,
    /// The record.
    pub record: Record,
}

/// Per-process reassembly state.
#[derive(Debug, Default)]
struct LineState {
    carry: Vec<u8>,
    overlong: bool,
    lines: u64,
}

/// Demultiplexes valgrind output chunks, each tagged with the pid of its writer.
#[derive(Debug)]
pub struct Demux {
    name: String,
    skip_bad: bool,
    skipped: u64,
    procs: Vec<TracedProcess>,
    state: Vec<LineState>,
    by_pid: BTreeMap<u32, usize>,
    out: VecDeque<Result<Tagged, TraceError>>,
    failed: bool,
}

impl Demux {
    /// A demultiplexer naming its input `name` in errors; with `skip_bad_records`, lines that
    /// do not parse are counted instead of ending the stream.
    pub fn new(name: &str, skip_bad_records: bool) -> Demux {
        Demux {
            name: name.to_owned(),
            skip_bad: skip_bad_records,
            skipped: 0,
            procs: Vec::new(),
            state: Vec::new(),
            by_pid: BTreeMap::new(),
            out: VecDeque::new(),
            failed: false,
        }
    }

    /// Whether `pid` has written anything yet.
    pub fn knows(&self, pid: u32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    /// Registers `pid` (with its parent, if known) before its first output.
    pub fn add_process(&mut self, pid: u32, parent: Option<u32>) -> usize {
        let i = self.procs.len();
        self.procs.push(TracedProcess {
            pid,
            parent,
            forked: false,
            images: Vec::new(),
        });
        self.state.push(LineState::default());
        self.by_pid.insert(pid, i);
        i
    }

    /// The processes seen so far, in order of first output.
    pub fn processes(&self) -> &[TracedProcess] {
        &self.procs
    }

    /// Bad lines skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Takes the next record (or error) produced by [`Demux::feed`] / [`Demux::finish`].
    pub fn pop(&mut self) -> Option<Result<Tagged, TraceError>> {
        self.out.pop_front()
    }

    /// Feeds bytes written by `pid`.
    pub fn feed(&mut self, pid: u32, mut bytes: &[u8]) {
        if !self.knows(pid) {
            self.add_process(pid, None);
        }
        while !bytes.is_empty() && !self.failed {
            // Looked up per line: a `Command:` line of a reused pid starts a new process.
            let p = self.by_pid[&pid];
            match memchr::memchr(b'\n', bytes) {
                Some(i) => {
                    let st = &mut self.state[p];
                    if st.carry.is_empty() && !st.overlong {
                        self.line(p, &bytes[..i]);
                    } else {
                        if !st.overlong {
                            st.carry.extend_from_slice(&bytes[..i]);
                        }
                        self.finish_carry(p);
                    }
                    bytes = &bytes[i + 1..];
                }
                None => {
                    let st = &mut self.state[p];
                    if !st.overlong {
                        st.carry.extend_from_slice(bytes);
                        if st.carry.len() > MAX_LINE {
                            st.overlong = true;
                            st.carry.truncate(80);
                        }
                    }
                    bytes = &[];
                }
            }
        }
    }

    /// The input ended: a last line without its newline is taken as a line.
    pub fn finish(&mut self) {
        for p in 0..self.procs.len() {
            if !self.failed && (!self.state[p].carry.is_empty() || self.state[p].overlong) {
                self.finish_carry(p);
            }
        }
    }

    fn finish_carry(&mut self, p: usize) {
        let carry = std::mem::take(&mut self.state[p].carry);
        if std::mem::take(&mut self.state[p].overlong) {
            self.state[p].lines += 1;
            self.bad(p, "Line too long", &carry);
        } else {
            self.line(p, &carry);
        }
        self.state[p].carry = carry;
        self.state[p].carry.clear();
    }

    fn bad(&mut self, p: usize, reason: &'static str, text: &[u8]) {
        if self.skip_bad {
            self.skipped += 1;
            return;
        }
        self.failed = true;
        self.out.push_back(Err(TraceError::BadRecord {
            path: format!("{} (pid {})", self.name, self.procs[p].pid),
            at: Location::Line(self.state[p].lines),
            reason,
            text: excerpt(text),
        }));
    }

    /// One complete line of process `p`.
    fn line(&mut self, p: usize, line: &[u8]) {
        self.state[p].lines += 1;
        match parse_line(line) {
            Ok(Line::Record(record)) => {
                let proc = &mut self.procs[p];
                if proc.images.is_empty() {
                    // Output without a preamble: a child forked by a traced process.
                    proc.forked = true;
                    proc.images.push(Image {
                        command: None,
                        records: 0,
                        exited: false,
                    });
                }
                let image = proc.images.len() - 1;
                proc.images[image].records += 1;
                self.out.push_back(Ok(Tagged {
                    process: p,
                    image,
                    record,
                }));
            }
            Ok(Line::Skip) => self.commentary(p, line),
            Err(reason) => self.bad(p, reason, line),
        }
    }

    /// A valgrind commentary line (`==PID== text`), or a blank or `--PID--` line.
    fn commentary(&mut self, p: usize, line: &[u8]) {
        let Some(text) = commentary_text(line) else {
            return;
        };
        if let Some(cmd) = text.strip_prefix("Command: ") {
            let proc = &self.procs[p];
            if proc.exited() {
                // The pid was reused by a new process after the previous one exited.
                let (pid, parent) = (proc.pid, None);
                let state = std::mem::take(&mut self.state[p]);
                let q = self.add_process(pid, parent);
                self.state[q] = state;
                self.procs[q].images.push(Image {
                    command: Some(cmd.to_owned()),
                    records: 0,
                    exited: false,
                });
                return;
            }
            self.procs[p].images.push(Image {
                command: Some(cmd.to_owned()),
                records: 0,
                exited: false,
            });
        } else if let Some(ppid) = text.strip_prefix("Parent PID: ") {
            if let Ok(ppid) = ppid.trim().parse() {
                self.procs[p].parent = Some(ppid);
            }
        } else if text.starts_with("Exit code:")
            && let Some(img) = self.procs[p].images.last_mut()
        {
            img.exited = true;
        }
    }
}

/// The text of a `==PID== text` line, `None` for anything else.
fn commentary_text(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(b"==")?;
    let end = memchr::memmem::find(rest, b"==")?;
    if !rest[..end].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let text = std::str::from_utf8(&rest[end + 2..]).ok()?;
    Some(
        text.strip_prefix(' ')
            .unwrap_or(text)
            .trim_end_matches('\r'),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rec::RecordKind;

    fn drain(d: &mut Demux) -> Vec<Tagged> {
        std::iter::from_fn(|| d.pop()).map(Result::unwrap).collect()
    }

    #[test]
    fn exec_starts_a_new_image_and_exit_code_ends_it() {
        let mut d = Demux::new("t", false);
        d.feed(
            7,
            b"==7== Command: sh -c exec\\ true\n==7== Parent PID: 3\nI  10,1\n L 20,8\n",
        );
        d.feed(
            7,
            b"==7== Command: /bin/true\nI  30,2\n==7== Exit code:       0\n",
        );
        let t = drain(&mut d);
        assert_eq!(
            t.iter().map(|t| (t.process, t.image)).collect::<Vec<_>>(),
            vec![(0, 0), (0, 0), (0, 1)]
        );
        let p = &d.processes()[0];
        assert_eq!(p.parent, Some(3));
        assert!(!p.forked && p.exited());
        assert_eq!(p.images[0].command.as_deref(), Some("sh -c exec\\ true"));
        assert!(!p.images[0].exited);
        assert_eq!(p.images[1].records, 1);
        assert!(p.images[1].exited);
        assert_eq!(p.last_command(), Some("/bin/true"));
    }

    #[test]
    fn lines_split_across_chunks_of_interleaved_processes_are_rejoined_per_process() {
        let mut d = Demux::new("t", false);
        d.feed(1, b"==1== Command: a\nI  10,1\n L 2");
        d.feed(2, b" S 30");
        d.feed(1, b"0,8\n");
        d.feed(2, b",4\n M 40,8");
        d.finish();
        let t = drain(&mut d);
        let got: Vec<(u32, Record)> = t
            .iter()
            .map(|t| (d.processes()[t.process].pid, t.record))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Record::new(RecordKind::Instr, 0x10, 1)),
                (1, Record::new(RecordKind::Load, 0x20, 8)),
                (2, Record::new(RecordKind::Store, 0x30, 4)),
                (2, Record::new(RecordKind::Modify, 0x40, 8)),
            ]
        );
        let child = &d.processes()[1];
        assert!(child.forked);
        assert_eq!(child.images[0].command, None);
    }

    #[test]
    fn bad_line_names_the_process_and_its_line() {
        let mut d = Demux::new("valgrind output", false);
        d.feed(5, b"==5== Command: x\nI  10,1\ngarbage\nI  20,1\n");
        let v: Vec<_> = std::iter::from_fn(|| d.pop()).collect();
        assert_eq!(v.len(), 2);
        let e = v[1].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("pid 5") && e.contains("line 3") && e.contains("garbage"),
            "{e}"
        );

        let mut d = Demux::new("t", true);
        d.feed(5, b"I  10,1\ngarbage\nI  20,1\n");
        assert_eq!(drain(&mut d).len(), 2);
        assert_eq!(d.skipped(), 1);
    }

    #[test]
    fn pid_reused_after_exit_is_a_new_process() {
        let mut d = Demux::new("t", false);
        d.feed(9, b"==9== Command: a\nI  10,1\n==9== Exit code: 0\n");
        d.feed(9, b"==9== Command: b\nI  10,1\n");
        let t = drain(&mut d);
        assert_eq!(t[1].process, 1);
        assert_eq!(d.processes().len(), 2);
        assert_eq!(d.processes()[1].last_command(), Some("b"));
    }

    #[test]
    fn commentary_parsing() {
        assert_eq!(
            commentary_text(b"==12== Command: ls -l"),
            Some("Command: ls -l")
        );
        assert_eq!(commentary_text(b"==12=="), Some(""));
        assert_eq!(commentary_text(b"==x== y"), None);
        assert_eq!(commentary_text(b"--12-- y"), None);
    }
}
