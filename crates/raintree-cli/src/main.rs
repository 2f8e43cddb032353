//! The `raintree` binary.

fn main() {}
