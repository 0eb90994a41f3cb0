//! Guest agent: the test guest's `/init`. (Built out in the VM issue.)
fn main() {}
