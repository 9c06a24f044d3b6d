//! The `compromis` command.
fn main() {}
