//! `compromis record --tracer qemu|lackey`: the tracer choice, and the QEMU path (glue over
//! `compromis_trace::qemu`). The lackey path stays in `record.rs`.

use crate::record::{RecordArgs, Tracer, TracerArgs};
use anyhow::Context;
use compromis_trace::qemu::{
    KillHandle, PluginFile, QemuCommand, QemuOpStream, QemuRecordStream, QemuStatus,
    qemu_available, qemu_ops, qemu_records, wrapper_reason,
};
use compromis_trace::{MemTraceFormat, TraceError, TraceFileWriter};
use compromis_types::Op;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Chooses the tracer and says which on stderr. Runs the QEMU path and returns its exit code
/// when QEMU is chosen; `None` lets `record.rs` run lackey.
pub fn run_if_qemu(args: &RecordArgs) -> anyhow::Result<Option<ExitCode>> {
    let t = &args.tracer;
    let probe = qemu_available("qemu-x86_64".as_ref());
    // Without an explicit choice, a wrapper goes to lackey: only lackey follows exec, and the
    // trace must be of the program that ends up running (not of its launcher).
    if t.tracer.is_none()
        && probe.is_ok()
        && let Some(why) = args.command.first().and_then(|c| wrapper_reason(c))
    {
        eprintln!("compromis record: tracer lackey ({why}; lackey follows exec, QEMU cannot)");
        lackey_options(t)?;
        return Ok(None);
    }
    match (t.tracer, probe) {
        (Some(Tracer::Lackey), _) => {
            note!("compromis record: tracer lackey (--tracer lackey)");
            lackey_options(t)?;
            Ok(None)
        }
        (None, Err(why)) => {
            note!("compromis record: tracer lackey ({why})");
            lackey_options(t)?;
            Ok(None)
        }
        (Some(Tracer::Qemu), Err(why)) => {
            anyhow::bail!("--tracer qemu: {why}; or use --tracer lackey")
        }
        (choice, Ok(version)) => {
            let how = if choice.is_some() {
                "--tracer qemu"
            } else {
                "the default where QEMU has plugin support"
            };
            note!("compromis record: tracer qemu ({version}, {how})");
            run(args).map(Some)
        }
    }
}

/// Refuses the QEMU-only options under lackey.
fn lackey_options(t: &TracerArgs) -> anyhow::Result<()> {
    if t.no_simulate || t.no_fetches {
        anyhow::bail!("--no-simulate and --no-fetches apply to --tracer qemu only");
    }
    Ok(())
}

/// Ops from the plugin stream; on an exec or a kill, ends with an error that says what happened
/// instead of printing results of part of the run.
struct Ops {
    inner: Box<dyn Iterator<Item = Result<Op, TraceError>> + Send>,
    status: Arc<Mutex<QemuStatus>>,
    killer: KillHandle,
    program: String,
    failed: bool,
}

impl Ops {
    fn explain(&self, e: TraceError) -> anyhow::Error {
        explain(&self.status, &self.program, e)
    }
}

/// A stream error, or what the program did that stopped the recording (an exec).
fn explain(status: &Mutex<QemuStatus>, program: &str, e: TraceError) -> anyhow::Error {
    {
        let status = status.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ev) = status.exec {
            return anyhow::anyhow!(
                "{program} (process {}) called exec: under --tracer qemu the new program would run \
                 natively, untraced, so the recording was stopped. If {program} is a wrapper (a \
                 shell script, env, a launcher), record the program it starts directly, or use \
                 --tracer lackey, which follows exec",
                ev.pid
            );
        }
    }
    anyhow::Error::from(e)
}

impl Iterator for Ops {
    type Item = anyhow::Result<Op>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.inner.next() {
            Some(Ok(op)) => Some(Ok(op)),
            Some(Err(_)) | None if self.killer.was_killed() => {
                self.failed = true;
                Some(Err(anyhow::anyhow!(
                    "interrupted: qemu and {} were stopped",
                    self.program
                )))
            }
            Some(Err(e)) => {
                self.failed = true;
                Some(Err(self.explain(e)))
            }
            None => None,
        }
    }
}

/// Runs the program under QEMU with the plugin and simulates its accesses as they arrive.
fn run(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    // The output file first: a bad --save path fails before the program runs.
    let writer = match &args.save {
        Some(path) => Some(TraceFileWriter::create(path, MemTraceFormat::Native)?),
        None => None,
    };
    // A program that cannot start: its error, exit 1, no results (as the lackey path).
    match compromis_trace::qemu::find_program(&args.command[0]) {
        Ok(p) => {
            if let Err(e) = std::fs::metadata(&p) {
                note!("cannot start {}: {e}", p.display());
                return Ok(ExitCode::from(1));
            }
        }
        Err(e) => {
            note!("cannot start the program: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    let plugin = PluginFile::write()?;
    let mut cmd = QemuCommand::new(plugin.path().to_owned(), args.command.clone());
    cmd.cpu.clone_from(&args.tracer.qemu_cpu);
    cmd.fetches = !args.tracer.no_fetches;
    cmd.program_output = crate::record::program_output(args);
    let start = Instant::now();
    let (recording, pipe) = cmd.spawn()?;
    let killer = recording.kill_handle();
    {
        let killer = killer.clone();
        crate::signals::on_signal(move || killer.kill());
    }
    let program = args.command[0].to_string_lossy().into_owned();
    let name = "qemu plugin stream";
    let (result, status, saved) = match writer {
        // Only saved: the records go straight to the writer, no simulator ops are made.
        Some(w) if args.tracer.no_simulate => {
            let QemuRecordStream {
                records,
                status,
                saved,
            } = qemu_records(pipe, name, w);
            let r = drain_records(records, &status, &killer, &program).map(|()| None);
            (r, status, Some(saved))
        }
        writer => {
            let QemuOpStream { ops, status, saved } = qemu_ops(pipe, name, writer, args.children);
            let ops = Ops {
                inner: ops,
                status: status.clone(),
                killer: killer.clone(),
                program: program.clone(),
                failed: false,
            };
            // The results are printed once QEMU has exited (none if the program did not start).
            let r = if args.tracer.no_simulate {
                drain(ops).map(|()| None)
            } else {
                crate::sim::run_source(&args.sim, &program, Box::new(ops)).map(Some)
            };
            (r, status, saved)
        }
    };
    if killer.was_killed() {
        drop(recording); // kills qemu if still needed and waits for it
        anyhow::bail!("interrupted: qemu and {program} were stopped");
    }
    // An error here drops `recording`, which kills qemu and waits for it.
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            // A program that did not start ends the stream early: report the program's failure.
            let started = status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .records()
                > 0;
            if !started {
                let exit = recording.wait().context("waiting for qemu")?;
                if !exit.success() {
                    note!("{program} failed: {exit}; nothing was recorded");
                    return Ok(ExitCode::from(1));
                }
            }
            return Err(e);
        }
    };
    let exit = recording.wait().context("waiting for qemu")?;
    let seconds = start.elapsed().as_secs_f64();
    drop(plugin);
    let s = status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    report(&s, seconds);
    if let (Some(path), Some(handle)) = (&args.save, &saved) {
        let summary = *handle
            .lock()
            .map_err(|_| anyhow::anyhow!("save state poisoned"))?;
        if let Some(s) = summary {
            note!("saved {} records to {}", s.records, path.display());
        }
    }
    if !exit.success() && s.records() == 0 {
        note!("{program} failed: {exit}; nothing was recorded");
        return Ok(ExitCode::from(1));
    }
    if let Some(o) = &outcome {
        crate::sim::print_outcome(o, &args.sim)?;
    }
    if exit.success() {
        Ok(ExitCode::SUCCESS)
    } else {
        note!("{program} failed: {exit}");
        Ok(ExitCode::from(1))
    }
}

/// Consumes the ops without simulating them (`--no-simulate`: the trace is only saved).
fn drain(ops: Ops) -> anyhow::Result<()> {
    for op in ops {
        op?;
    }
    Ok(())
}

/// Saves a recording that is only saved (`--no-simulate --save`).
fn drain_records(
    records: compromis_trace::qemu::QemuSave,
    status: &Mutex<QemuStatus>,
    killer: &KillHandle,
    program: &str,
) -> anyhow::Result<()> {
    match records.run() {
        Ok(_) => Ok(()),
        Err(_) if killer.was_killed() => {
            anyhow::bail!("interrupted: qemu and {program} were stopped")
        }
        Err(e) => Err(explain(status, program, e)),
    }
}

/// The stream summary on stderr: records, rate, processes and thread streams.
fn report(s: &QemuStatus, seconds: f64) {
    let n = s.records();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / seconds.max(1e-9) / 1e6;
    note!(
        "qemu: {n} records ({}) in {seconds:.2} s, {rate:.1} M records/s; {} process(es), {} thread stream(s)",
        if s.fetches {
            "fetches, loads, stores"
        } else {
            "loads, stores"
        },
        s.processes(),
        s.streams.len()
    );
    if s.streams.len() > 1 {
        for (id, count) in &s.streams {
            note!(
                "  process {} thread (vCPU) {}: {count} records",
                id.pid,
                id.vcpu
            );
        }
    }
    if s.lost > 0 {
        note!(
            "warning: the plugin lost {} records (too many threads)",
            s.lost
        );
    }
}
