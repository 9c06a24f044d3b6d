//! Integration tests of `compromis-mmu`.

mod fuzz;
