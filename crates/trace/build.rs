//! Builds the QEMU plugin (`crates/qemu-plugin`, a GPL-2.0-or-later cdylib) with the same `rustc`
//! and embeds it (`compromis_trace::qemu::PLUGIN`), so that `cargo run -p compromis-cli -- record`
//! has a plugin matching its own source without a separate build step. The plugin has no crate
//! dependencies, so one `rustc` call suffices (a nested `cargo build` would wait on the outer
//! build's lock). Only on x86_64 Linux, the one host the plugin supports; elsewhere the crate is
//! built without it and `--tracer qemu` reports that.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(compromis_qemu_plugin)");
    let src = PathBuf::from("../qemu-plugin/src/lib.rs");
    println!("cargo::rerun-if-changed={}", src.display());
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os != "linux" || arch != "x86_64" || !src.exists() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("libcompromis_qemu_plugin.so");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args([
        "--edition",
        "2024",
        "--crate-type",
        "cdylib",
        "--crate-name",
        "compromis_qemu_plugin",
        "-C",
        "opt-level=3",
        "-C",
        "panic=abort",
        "-C",
        "strip=debuginfo",
        "--cap-lints",
        "warn",
    ]);
    if let Ok(target) = std::env::var("TARGET") {
        cmd.args(["--target", &target]);
    }
    cmd.arg(&src).arg("-o").arg(&out);
    let status = cmd
        .status()
        .expect("cannot run rustc to build the QEMU plugin");
    assert!(
        status.success(),
        "building the QEMU plugin failed: {status}"
    );
    println!("cargo::rustc-cfg=compromis_qemu_plugin");
}
