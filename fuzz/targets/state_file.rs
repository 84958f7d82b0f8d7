//! Fuzz target `state_file`: see `healthgate::fuzzing::state_file` and RELIABILITY.md.

fn main() {
    healthgate::fuzzing::init();
    afl::fuzz!(|data: &[u8]| {
        healthgate::fuzzing::state_file(data);
    });
}
