//! `compromis record`: run a program under valgrind lackey and simulate its memory accesses as
//! they arrive through a pipe (glue over `compromis_trace::valgrind`).

use anyhow::Context;
use compromis_trace::valgrind::{KillHandle, LackeyCommand};
use compromis_trace::{Format, LackeyReader, OpReader, RecordSource, TeeSource, TraceFileWriter};
use compromis_types::Op;
use std::ffi::OsString;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Arguments of `compromis record`.
#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// Also write the trace in the native format (`.ctrace`) to FILE.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Skip trace lines that do not parse and report how many, instead of stopping.
    #[arg(long)]
    pub skip_bad_records: bool,
    /// Tracer choice (`--tracer qemu|lackey`) and QEMU options.
    #[command(flatten)]
    pub tracer: crate::record_qemu::TracerArgs,
    /// Simulation options (as for `compromis sim`).
    #[command(flatten)]
    pub sim: crate::sim::SimOptions,
    /// The program to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Ops from the pipe; remembers how many bad records were skipped, and ends with an error
/// instead of a clean end when valgrind was killed (Ctrl-C), so no partial results are printed.
struct Ops {
    inner: OpReader,
    skipped: Arc<AtomicU64>,
    killer: KillHandle,
    program: String,
}

impl Iterator for Ops {
    type Item = anyhow::Result<Op>;
    fn next(&mut self) -> Option<Self::Item> {
        let next = self.inner.next();
        self.skipped.store(self.inner.skipped(), Ordering::Relaxed);
        if next.is_none() && self.killer.was_killed() {
            let program = std::mem::take(&mut self.program);
            return (!program.is_empty()).then(|| {
                Err(anyhow::anyhow!(
                    "interrupted: valgrind and {program} were stopped"
                ))
            });
        }
        next.map(|r| r.map_err(anyhow::Error::from))
    }
}

/// Runs the subcommand.
pub fn run(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    if let Some(code) = crate::record_qemu::run_if_qemu(args)? {
        return Ok(code);
    }
    // The output file first: a bad --save path fails before the program runs.
    let writer = match &args.save {
        Some(path) => Some(TraceFileWriter::create(path, Format::Native)?),
        None => None,
    };
    let cmd = LackeyCommand::new(args.command.clone());
    let (recording, pipe) = cmd.spawn()?;
    let killer = recording.kill_handle();
    {
        let killer = killer.clone();
        if let Err(e) = ctrlc::set_handler(move || killer.kill()) {
            eprintln!("warning: cannot install the Ctrl-C handler: {e}");
        }
    }
    let name = "valgrind lackey output";
    let lackey = LackeyReader::new(
        BufReader::with_capacity(1 << 18, pipe),
        name,
        args.skip_bad_records,
    );
    let mut saved = None;
    let source: Box<dyn RecordSource> = match writer {
        Some(w) => {
            let tee = TeeSource::new(lackey, w);
            saved = Some(tee.summary_handle());
            Box::new(tee)
        }
        None => Box::new(lackey),
    };
    let skipped = Arc::new(AtomicU64::new(0));
    let program = args.command[0].to_string_lossy().into_owned();
    let ops = Ops {
        inner: OpReader::from_records(source),
        skipped: skipped.clone(),
        killer: killer.clone(),
        program: program.clone(),
    };
    let result = crate::sim::run_source(&args.sim, &program, Box::new(ops));
    if killer.was_killed() {
        drop(recording); // kills valgrind if still needed and waits for it
        // The stream ended early but cleanly, so the tee may have finished the file: a trace of
        // part of the run is not what was asked for.
        let written = saved
            .as_ref()
            .is_some_and(|h| h.lock().is_ok_and(|g| g.is_some()));
        if let (true, Some(path)) = (written, &args.save) {
            let _ = std::fs::remove_file(path);
        }
        anyhow::bail!("interrupted: valgrind and {program} were stopped");
    }
    // An error here drops `recording`, which kills valgrind and waits for it.
    let code = result?;
    let status = recording.wait().context("waiting for valgrind")?;
    let skipped = skipped.load(Ordering::Relaxed);
    if skipped > 0 {
        eprintln!("skipped {skipped} bad trace lines");
    }
    if let (Some(path), Some(handle)) = (&args.save, &saved) {
        let summary = *handle
            .lock()
            .map_err(|_| anyhow::anyhow!("save state poisoned"))?;
        if let Some(s) = summary {
            eprintln!("saved {} records to {}", s.records, path.display());
        }
    }
    if status.success() {
        Ok(code)
    } else {
        eprintln!("{program} failed: {status}");
        Ok(ExitCode::from(1))
    }
}
