//! Integration tests of `compromis-sim`, gathered into one test binary (link time is most of
//! a CI run on two cores).

mod cycles;
mod fast_path;
mod mlp;
mod pipeline;
mod shadow_fill;
mod shadow_sync;
mod translation;
mod workloads;
