//! Running a program under valgrind lackey and streaming its trace through a pipe
//! (`compromis record`).
//!
//! valgrind writes its log (lackey's trace lines and its own `==PID==` commentary) to
//! `--log-file=/proc/<our pid>/fd/<read end of a pipe>`: opening that path gives valgrind a write
//! end of our pipe, so the trace never touches the disk and the program's own stdin, stdout and
//! stderr stay inherited and usable. Commentary lines are recognised and skipped by the lackey
//! reader. `--child-silent-after-fork=yes` keeps forked children from interleaving their output.
//!
//! A waiter thread reaps valgrind and then drops our copy of the pipe's write end, so the reader
//! sees end-of-file exactly when valgrind is gone (even if valgrind died before opening the pipe).
//! Dropping a [`Recording`] (or [`KillHandle::kill`], e.g. from a Ctrl-C handler) kills valgrind
//! and waits for it: no process is left behind.

use std::ffi::OsString;
use std::io::{PipeReader, PipeWriter};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the waiter thread polls valgrind.
const POLL: Duration = Duration::from_millis(5);

/// An error starting or waiting for valgrind.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No command was given.
    #[error("No command to record")]
    NoCommand,
    /// The pipe could not be created.
    #[error("Cannot create the trace pipe")]
    Pipe(#[source] std::io::Error),
    /// valgrind could not be started.
    #[error("Cannot start {valgrind:?} (is valgrind installed?)")]
    Spawn {
        /// The valgrind executable.
        valgrind: OsString,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for valgrind failed.
    #[error("Cannot wait for valgrind")]
    Wait(#[source] std::io::Error),
}

/// How to run the program.
#[derive(Clone, Debug)]
pub struct LackeyCommand {
    /// The valgrind executable (default `valgrind`, found in `PATH`).
    pub valgrind: OsString,
    /// The program and its arguments.
    pub command: Vec<OsString>,
}

impl LackeyCommand {
    /// Runs `command` (program then arguments) under `valgrind` from `PATH`.
    pub fn new(command: Vec<OsString>) -> LackeyCommand {
        LackeyCommand {
            valgrind: "valgrind".into(),
            command,
        }
    }

    /// The valgrind arguments before the program, given the log path.
    fn valgrind_args(&self, log: &str) -> Vec<OsString> {
        vec![
            "--tool=lackey".into(),
            "--trace-mem=yes".into(),
            "--child-silent-after-fork=yes".into(),
            format!("--log-file={log}").into(),
        ]
    }

    /// Starts valgrind. Returns the recording (owning the process) and the trace stream.
    pub fn spawn(&self) -> Result<(Recording, PipeReader), RecordError> {
        if self.command.is_empty() {
            return Err(RecordError::NoCommand);
        }
        let (reader, writer) = std::io::pipe().map_err(RecordError::Pipe)?;
        let log = format!("/proc/{}/fd/{}", std::process::id(), reader.as_raw_fd());
        let child = Command::new(&self.valgrind)
            .args(self.valgrind_args(&log))
            .arg("--")
            .args(&self.command)
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| RecordError::Spawn {
                valgrind: self.valgrind.clone(),
                source,
            })?;
        Ok((Recording::start(child, writer), reader))
    }
}

/// Kills the recorded process from anywhere (a Ctrl-C handler, another thread).
#[derive(Clone, Debug)]
pub struct KillHandle {
    child: Arc<Mutex<Child>>,
    killed: Arc<AtomicBool>,
}

impl KillHandle {
    /// Kills valgrind (and with it the program) if it still runs. Idempotent.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        // Ignore "already exited": std never signals a reaped pid.
        let _ = child.kill();
    }

    /// Whether [`KillHandle::kill`] was called.
    pub fn was_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// A running valgrind. Dropping it kills valgrind and waits for it.
#[derive(Debug)]
pub struct Recording {
    handle: KillHandle,
    waiter: Option<JoinHandle<std::io::Result<ExitStatus>>>,
}

impl Recording {
    fn start(child: Child, writer: PipeWriter) -> Recording {
        let child = Arc::new(Mutex::new(child));
        let handle = KillHandle {
            child: child.clone(),
            killed: Arc::new(AtomicBool::new(false)),
        };
        let waiter = std::thread::spawn(move || {
            let status = loop {
                let polled = child
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .try_wait();
                match polled {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) => std::thread::sleep(POLL),
                    Err(e) => break Err(e),
                }
            };
            // valgrind is gone: end-of-file for the reader once its own write end closed too.
            drop(writer);
            status
        });
        Recording {
            handle,
            waiter: Some(waiter),
        }
    }

    /// A handle that can kill valgrind from another thread.
    pub fn kill_handle(&self) -> KillHandle {
        self.handle.clone()
    }

    /// Waits for valgrind to exit and returns its status (the program's own: valgrind exits
    /// with the program's code, or dies of the program's signal).
    pub fn wait(mut self) -> Result<ExitStatus, RecordError> {
        self.join()
    }

    fn join(&mut self) -> Result<ExitStatus, RecordError> {
        let Some(w) = self.waiter.take() else {
            return Err(RecordError::Wait(std::io::Error::other("already waited")));
        };
        match w.join() {
            Ok(r) => r.map_err(RecordError::Wait),
            Err(_) => Err(RecordError::Wait(std::io::Error::other(
                "waiter thread panicked",
            ))),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.waiter.is_some() {
            let running = self
                .handle
                .child
                .lock()
                .map(|mut c| matches!(c.try_wait(), Ok(None)));
            if running.unwrap_or(true) {
                self.handle.kill();
            }
            let _ = self.join();
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
    use crate::LackeyReader;
    use std::io::BufReader;

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
    fn records_true_and_reports_exit_status() {
        if !valgrind_available() {
            eprintln!("valgrind not installed: skipping");
            return;
        }
        let (rec, pipe) = LackeyCommand::new(vec!["/bin/false".into()])
            .spawn()
            .unwrap();
        let mut r = LackeyReader::new(BufReader::new(pipe), "valgrind", false);
        let n = r.by_ref().map(Result::unwrap).count();
        assert!(n > 1000, "only {n} records");
        let status = rec.wait().unwrap();
        assert_eq!(status.code(), Some(1));
    }

    #[test]
    fn kill_ends_the_stream() {
        if !valgrind_available() {
            eprintln!("valgrind not installed: skipping");
            return;
        }
        let (rec, pipe) = LackeyCommand::new(vec!["sleep".into(), "30".into()])
            .spawn()
            .unwrap();
        let h = rec.kill_handle();
        let mut r = LackeyReader::new(BufReader::new(pipe), "valgrind", false);
        // Read a little, then kill: the stream must end (no hang) and the status must be a signal.
        let _ = r.by_ref().take(100).count();
        h.kill();
        let _ = r.count();
        let status = rec.wait().unwrap();
        assert!(status.code().is_none(), "{status:?}");
        assert!(h.was_killed());
    }
}
