//! Anvil: a CPU tensor engine. The kernels crate is re-exported as [`kernels`].

pub mod autograd;
pub mod bench;
pub mod generate;
pub mod io;
pub mod tensor;
pub use anvil_kernels as kernels;

pub mod branches;
pub mod corpus;
pub mod data;
pub mod json;
pub mod memory;
pub mod models;
pub mod nn;
pub mod plot;
pub mod tokenizer;
pub mod train;
