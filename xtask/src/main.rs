//! cargo xtask: orchestration only. (Built out in the VM issue.)
fn main() {}
