//! Scenarios (being written).
fn main() {}
