//! Slurm job-array scripts: one array task per shard, each running
//! `compromis sweep SPEC --out DIR --shard $SLURM_ARRAY_TASK_ID/N`. Finished points are skipped,
//! so resubmitting the script resumes the sweep; the task that finishes the last point writes the
//! table (or run `compromis sweep merge DIR`).

use crate::provenance::shell_quote;
use std::path::Path;

/// Options of the script.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// Array tasks (shards).
    pub shards: usize,
    /// Worker threads per task (also `--cpus-per-task`).
    pub jobs: usize,
    /// Extra `#SBATCH` lines (`--partition=x`, `--time=1:00:00`).
    pub sbatch: Vec<String>,
}

/// The sbatch script. `exe`, `spec` and `out` should be absolute (tasks may start elsewhere).
pub fn script(exe: &Path, spec: &Path, out: &Path, o: &SlurmOptions) -> String {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let mut s = String::from("#!/bin/bash\n");
    s += "# Written by `compromis sweep --slurm`: one array task per shard; resubmit to resume.\n";
    s += "#SBATCH --job-name=compromis-sweep\n";
    s += &format!("#SBATCH --array=0-{}\n", o.shards.max(1) - 1);
    s += &format!("#SBATCH --cpus-per-task={}\n", o.jobs.max(1));
    s += &format!("#SBATCH --output={}/slurm-%A_%a.out\n", out.display());
    for line in &o.sbatch {
        s += &format!("#SBATCH {line}\n");
    }
    s += "set -euo pipefail\n";
    s += &format!(
        "exec {} sweep {} --out {} --jobs {} --shard \"${{SLURM_ARRAY_TASK_ID}}/{}\"\n",
        q(exe),
        q(spec),
        q(out),
        o.jobs.max(1),
        o.shards.max(1)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_task_per_shard() {
        let s = script(
            Path::new("/bin/compromis"),
            Path::new("/s/a b.toml"),
            Path::new("/o"),
            &SlurmOptions {
                shards: 4,
                jobs: 2,
                sbatch: vec!["--time=10".into()],
            },
        );
        assert!(s.contains("#SBATCH --array=0-3\n"));
        assert!(s.contains("#SBATCH --time=10\n"));
        assert!(s.contains(
            "sweep '/s/a b.toml' --out /o --jobs 2 --shard \"${SLURM_ARRAY_TASK_ID}/4\""
        ));
    }
}
