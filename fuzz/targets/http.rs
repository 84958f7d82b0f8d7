//! Fuzz target `http`: see `healthgate::fuzzing::http` and RELIABILITY.md.

fn main() {
    healthgate::fuzzing::init();
    afl::fuzz!(|data: &[u8]| {
        healthgate::fuzzing::http(data);
    });
}
