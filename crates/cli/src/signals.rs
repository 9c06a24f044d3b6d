//! SIGINT, SIGTERM and SIGHUP end every command cleanly, within a second.
//!
//! A thread waits for the signals (signal-hook). On the first one it runs the command's stop
//! hook, if it set one (`record`: kill the tracer and the program's process tree), lets the
//! command finish on its own for up to [`GRACE`] (`record` then reports "interrupted" itself and
//! its writers discard their temporary files), and otherwise removes every registered temporary
//! file or folder (`compromis_types::cleanup`) and exits with status 2. Outputs are only ever
//! renamed into place complete, so a pre-existing output is either intact or fully replaced.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How long a command with a stop hook gets to stop by itself.
const GRACE: Duration = Duration::from_millis(600);

type Hook = Box<dyn FnOnce() + Send>;

static HOOK: Mutex<Option<Hook>> = Mutex::new(None);

/// Installs the handlers (once, at start).
pub fn install() -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                stop(sig);
            }
        })?;
    Ok(())
}

/// Sets what stops the command's work (kills its child processes); replaces any earlier hook.
pub fn on_signal(hook: impl FnOnce() + Send + 'static) {
    *HOOK.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(hook));
}

fn stop(sig: i32) -> ! {
    let hook = HOOK.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(h) = hook {
        h();
        // The command notices its children are gone and returns its own error; the process
        // exits then, ending this thread.
        std::thread::sleep(GRACE);
    }
    compromis_types::cleanup::remove_registered();
    let name = match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "SIGHUP",
    };
    note!("error: interrupted ({name})");
    std::process::exit(2)
}
