//! `compromis data`: lists the VM-trace families `compromis reproduce` reads (where to get them,
//! their licences, the layout expected); `compromis data check DIR` validates a folder. Thin glue
//! over `compromis_repro::data`.

use compromis_report::Table;
use compromis_repro::data::{FAMILIES, FamilyStatus, check};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `compromis data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: Option<DataCommand>,
}

/// Subcommands of `compromis data`.
#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Check a data folder: which families are present, and a read of the first events of each.
    Check {
        /// The folder (as given to `compromis reproduce --data`).
        dir: PathBuf,
    },
}

/// Runs the subcommand.
pub fn run(args: &DataArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        None => {
            let mut text = String::from(
                "VM-trace families read by `compromis reproduce --data DIR` (default ../shared/data);\n\
                 any may be missing (its rows are skipped). Any of them can also be replayed with\n\
                 `compromis place --trace PATH --trace-format FORMAT`.\n\n",
            );
            for f in &FAMILIES {
                text += &format!(
                    "{}  (--trace-format {})\n  what:    {}\n  get:     {}\n  licence: {}\n  layout:  DIR/{}\n\n",
                    f.rel.split('/').next().unwrap_or(f.rel),
                    f.format,
                    f.what,
                    f.url,
                    f.licence,
                    f.layout
                );
            }
            text += "Check a folder with `compromis data check DIR`.\n";
            crate::emit(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(DataCommand::Check { dir }) => {
            anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
            let c = check(dir);
            let mut t = Table::new(["family", "format", "path", "status"]);
            let mut problems = String::new();
            for (f, path, s) in &c.families {
                let status = match s {
                    FamilyStatus::Missing => "missing".to_owned(),
                    FamilyStatus::Ok { events } => format!("ok ({events} events read)"),
                    FamilyStatus::Bad(m) => {
                        problems += &format!("problem: {m}\n");
                        "BAD".to_owned()
                    }
                };
                t.push([
                    f.rel.split('/').next().unwrap_or(f.rel).to_owned(),
                    f.format.to_string(),
                    path.display().to_string(),
                    status,
                ]);
            }
            crate::emit(&(t.to_text() + &problems))?;
            if c.ok() {
                Ok(ExitCode::SUCCESS)
            } else {
                if problems.is_empty() {
                    note!(
                        "error: no VM-trace family found in {} (see `compromis data`)",
                        dir.display()
                    );
                }
                Ok(ExitCode::from(2))
            }
        }
    }
}
