//! The `anvil` command line.

fn main() {}
