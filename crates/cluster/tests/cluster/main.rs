//! Integration tests of `compromis-cluster`, gathered into one test binary (link time is most of
//! a CI run on two cores).

mod engine;
mod fuzz;
mod golden;
mod oracle;
mod real_data;
mod under_load;
