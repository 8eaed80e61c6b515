//! The `slotguard` command.
fn main() {
    println!("slotguard demo: not yet");
}
