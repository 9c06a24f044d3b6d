//! Integration tests of `compromis-cli`, gathered into one test binary (link time is most of
//! a CI run on two cores).

mod common;
mod config;
mod hv;
mod kvm;
mod place;
mod record_qemu;
mod reproduce;
mod robust;
mod sim;
mod trace;
