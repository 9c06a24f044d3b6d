//! Embeds the git commit of the source tree (`COMPROMIS_GIT_COMMIT`), or "unknown" outside git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = std::env::var("COMPROMIS_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=COMPROMIS_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=COMPROMIS_GIT_COMMIT");
    // Rebuild when HEAD moves (a commit, a checkout); paths work in worktrees too.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
