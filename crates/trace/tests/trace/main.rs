//! Integration tests of `compromis-trace`, gathered into one test binary (link time is most of
//! a CI run on two cores).

mod files;
mod fuzz;
mod props;
