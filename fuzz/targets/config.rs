//! Fuzz target `config`: see `healthgate::fuzzing::config` and RELIABILITY.md.

fn main() {
    healthgate::fuzzing::init();
    afl::fuzz!(|data: &[u8]| {
        healthgate::fuzzing::config(data);
    });
}
