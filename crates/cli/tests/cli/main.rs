//! Integration tests of `compromis-cli`, gathered into one test binary (link time is most of
//! a CI run on two cores).

mod common;
mod config;
mod fair;
mod figures;
mod hv;
mod kvm;
mod machines;
mod place;
mod record_qemu;
mod reproduce;
mod robust;
mod robust_more;
mod shadow_sync;
mod sim;
mod sweep;
mod trace;
