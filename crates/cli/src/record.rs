//! `compromis record`: run a program under valgrind lackey and simulate its memory accesses as
//! they arrive (glue over `compromis_trace::valgrind` and `compromis_trace::record`).

use anyhow::Context;
use compromis_report::Format;
use compromis_trace::record::{Children, RecordOps, RecordReport, RootExit, SaveTo};
use compromis_trace::valgrind::LackeyCommand;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `compromis record`.
#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// Also write the trace in the native format (`.ctrace`) to FILE (with `--children
    /// separate`, one file per process: FILE, then FILE's stem.PID.ctrace for the others).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Skip trace lines that do not parse and report how many, instead of stopping.
    #[arg(long)]
    pub skip_bad_records: bool,
    /// Child processes: none (simulate only the program's own process, through its execs),
    /// separate (each traced process its own guest process), all (every record, one address
    /// space).
    #[arg(long, value_name = "MODE", default_value = "none")]
    pub children: Children,
    /// Programs valgrind must not trace into (glob on the executable path, e.g. '*/ssh';
    /// valgrind's --trace-children-skip). Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub no_follow: Vec<String>,
    /// Write the program's stdout and stderr to FILE [default: both to stderr, so that stdout (or
    /// -o FILE) holds only the results].
    #[arg(long, value_name = "FILE")]
    pub program_output: Option<PathBuf>,
    /// Tracer choice (`--tracer qemu|lackey`) and QEMU options.
    #[command(flatten)]
    pub tracer: TracerArgs,
    /// Simulation options (as for `compromis sim`).
    #[command(flatten)]
    pub sim: crate::sim::SimOptions,
    /// The program to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// The program that runs the recorded program and reports its accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tracer {
    /// QEMU user-mode emulation (`qemu-x86_64`) with our TCG plugin: binary records, fast.
    Qemu,
    /// valgrind lackey: text records, slow, follows what valgrind follows.
    Lackey,
}

/// Tracer options of `compromis record`.
#[derive(clap::Args, Debug)]
pub struct TracerArgs {
    /// Which tracer runs the program [default: qemu when `qemu-x86_64` with plugin support is
    /// installed, lackey otherwise].
    #[arg(long, value_enum)]
    pub tracer: Option<Tracer>,
    /// qemu: record data accesses only, no instruction fetches (faster; lackey always records
    /// fetches, and without them the simulator counts no instructions).
    #[arg(long)]
    pub no_fetches: bool,
    /// qemu: only save the trace (`--save`), do not simulate it.
    #[arg(long, requires = "save")]
    pub no_simulate: bool,
    /// qemu: the guest CPU model (`max` makes glibc pick the code paths it uses natively).
    #[arg(long, default_value = "max", value_name = "MODEL")]
    pub qemu_cpu: String,
}

/// Runs the subcommand under lackey (`main` first offers it to the QEMU path).
pub fn run(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    // The output file first: a bad --save path fails before the program runs.
    let save = match &args.save {
        Some(path) => Some(SaveTo::create(path)?),
        None => None,
    };
    let mut cmd = LackeyCommand::new(args.command.clone());
    cmd.children = args.children;
    cmd.no_follow.clone_from(&args.no_follow);
    cmd.skip_bad_records = args.skip_bad_records;
    cmd.program_output = program_output(args);
    let (recording, stream) = cmd.spawn()?;
    let killer = recording.kill_handle();
    {
        let killer = killer.clone();
        crate::signals::on_signal(move || killer.kill());
    }
    // Killed (Ctrl-C): the ops end with an interruption error, so no partial results are
    // printed and nothing is saved.
    let ops = RecordOps::new(stream, args.children, save).stop_when_killed(killer.clone());
    let state = ops.state();
    let program = args.command[0].to_string_lossy().into_owned();
    let result = crate::sim::simulate_stream(&args.sim, &program, ops);
    if killer.was_killed() {
        drop(recording); // kills valgrind if still needed and waits for it
        anyhow::bail!("interrupted: valgrind and {program} were stopped");
    }
    // An error here drops `recording`, which kills valgrind and waits for it.
    let outcome = result?;
    let status = recording.wait().context("waiting for valgrind")?;
    let root_exit = match status.code() {
        Some(c) => RootExit::Code(c),
        None => RootExit::Signal,
    };
    let state = state
        .lock()
        .map_err(|_| anyhow::anyhow!("record state poisoned"))?
        .clone();
    let report = RecordReport::new(args.children, &state, root_exit);
    crate::note_text(&report_text(&report));
    if state.skipped > 0 {
        note!("skipped {} bad trace lines", state.skipped);
    }
    for s in &report.saved {
        note!("saved {} records to {}", s.records, s.path.display());
    }
    if !status.success() && report.simulated_records == 0 {
        // The program did not start (or died before its first access): no results to print.
        note!("{program} failed: {status}; nothing was recorded");
        return Ok(ExitCode::from(1));
    }
    print(&outcome, &report, &args.sim)?;
    if status.success() {
        Ok(ExitCode::SUCCESS)
    } else {
        note!("{program} failed: {status}");
        Ok(ExitCode::from(1))
    }
}

/// Where the program's stdout and stderr go: `--program-output FILE`, or stderr.
pub fn program_output(args: &RecordArgs) -> compromis_trace::ProgramOutput {
    match &args.program_output {
        Some(p) => compromis_trace::ProgramOutput::File(p.clone()),
        None => compromis_trace::ProgramOutput::Stderr,
    }
}

/// What was traced, for stderr: one line per process, one per program it ran.
fn report_text(r: &RecordReport) -> String {
    let simulated = r.processes.iter().filter(|p| p.simulated).count();
    let mut s = format!(
        "record: {} process(es) traced, {} simulated (--children {}), {} records simulated\n",
        r.processes.len(),
        simulated,
        r.children,
        r.simulated_records
    );
    for p in &r.processes {
        let parent = p
            .parent
            .map(|pp| format!(", parent {pp}"))
            .unwrap_or_default();
        let role = if p.simulated { "simulated" } else { "left out" };
        s += &format!("  pid {}{parent}: {} records, {role}\n", p.pid, p.records);
        for (i, img) in p.images.iter().enumerate() {
            let cmd = match &img.command {
                Some(c) if i > 0 => format!("exec {c}"),
                Some(c) => c.clone(),
                None => match p.parent {
                    Some(pp) => format!("(forked from pid {pp})"),
                    None => "(forked)".into(),
                },
            };
            s += &format!("    {:>12}  {cmd}\n", img.records);
        }
    }
    if r.children == Children::None && simulated < r.processes.len() {
        s += "  (--children separate or all simulates the others)\n";
    }
    for w in &r.warnings {
        s += &format!("warning: {w}\n");
    }
    s
}

/// A CSV field, quoted when it needs to be.
fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// The processes as CSV: one row per program each process ran.
fn report_csv(r: &RecordReport) -> String {
    let mut s = String::from("pid,parent,image,command,records,exited,simulated\n");
    for p in &r.processes {
        for (i, img) in p.images.iter().enumerate() {
            let cmd = match (&img.command, p.parent) {
                (Some(c), _) => c.clone(),
                (None, Some(pp)) => format!("(forked from pid {pp})"),
                (None, None) => "(forked)".to_owned(),
            };
            s += &format!(
                "{},{},{i},{},{},{},{}\n",
                p.pid,
                p.parent.map(|pp| pp.to_string()).unwrap_or_default(),
                csv_field(&cmd),
                img.records,
                img.exited,
                p.simulated
            );
        }
    }
    s
}

/// Prints the simulation results; JSON and CSV also carry what was traced (JSON: a `record`
/// object; CSV: a second table, after a blank line, one row per program each process ran).
/// Both carry the provenance (JSON: a `provenance` object; CSV: trailing columns on both tables).
fn print(
    o: &compromis_sim::Outcome,
    r: &RecordReport,
    opts: &crate::sim::SimOptions,
) -> anyhow::Result<()> {
    let prov = compromis_sweep::provenance::Provenance::of_process();
    let text = match opts.output {
        Format::Json => {
            let mut v = serde_json::to_value(o)?;
            if let Some(m) = v.as_object_mut() {
                m.insert("record".into(), serde_json::to_value(r)?);
            }
            serde_json::to_string_pretty(&prov.attach_json(v))? + "\n"
        }
        Format::Csv => prov.attach_csv(&format!(
            "{}\n{}",
            compromis_sim::table::csv_rows(o).to_csv()?,
            report_csv(r)
        ))?,
        Format::Table => crate::sim::render_outcome(o, Format::Table, Some(&opts.machine_label()))?,
    };
    opts.file.deliver(&text)
}
