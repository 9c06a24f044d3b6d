//! Supervision of the tracer process (valgrind or QEMU) that runs the recorded program: one
//! waiter thread reaps it and then runs an exit hook (valgrind's: mark the root process done;
//! QEMU's: drop our copy of the pipe's write end so the reader sees end-of-file). Dropping a
//! [`Recording`] (or [`KillHandle::kill`], e.g. from a Ctrl-C handler) kills the tracer and waits
//! for it: no process is left behind.

use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the waiter thread polls the tracer.
const POLL: Duration = Duration::from_millis(5);

/// Kills the recorded process from anywhere (a Ctrl-C handler, another thread).
#[derive(Clone, Debug)]
pub struct KillHandle {
    child: Arc<Mutex<Child>>,
    killed: Arc<AtomicBool>,
}

impl KillHandle {
    /// Kills the tracer (and with it the program) and every process the program started that
    /// still runs under it, if the tracer still runs. Idempotent.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(child.try_wait(), Ok(None)) {
            // The descendants first: once the tracer is gone they would be reparented to init
            // and could no longer be found.
            crate::sys::kill_descendants(child.id());
        }
        // Ignore "already exited": std never signals a reaped pid.
        let _ = child.kill();
    }

    /// Whether [`KillHandle::kill`] was called.
    pub fn was_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// The process id of the tracer (the traced program's main process).
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .id()
    }
}

/// A running tracer. Dropping it kills the tracer and waits for it.
#[derive(Debug)]
pub struct Recording {
    handle: KillHandle,
    waiter: Option<JoinHandle<std::io::Result<ExitStatus>>>,
}

impl Recording {
    /// Supervises `child`; `on_exit` runs in the waiter thread right after the child is reaped.
    pub(crate) fn start(child: Child, on_exit: impl FnOnce() + Send + 'static) -> Recording {
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
            on_exit();
            status
        });
        Recording {
            handle,
            waiter: Some(waiter),
        }
    }

    /// A handle that can kill the tracer from another thread.
    pub fn kill_handle(&self) -> KillHandle {
        self.handle.clone()
    }

    /// Waits for the tracer to exit and returns its status (the program's own: valgrind and
    /// QEMU exit with the program's code, or die of the program's signal).
    pub fn wait(mut self) -> std::io::Result<ExitStatus> {
        self.join()
    }

    fn join(&mut self) -> std::io::Result<ExitStatus> {
        let Some(w) = self.waiter.take() else {
            return Err(std::io::Error::other("already waited"));
        };
        w.join()
            .unwrap_or_else(|_| Err(std::io::Error::other("waiter thread panicked")))
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
