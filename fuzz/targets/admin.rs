//! Fuzz target `admin`: see `healthgate::fuzzing::admin` and RELIABILITY.md.

fn main() {
    healthgate::fuzzing::init();
    afl::fuzz!(|data: &[u8]| {
        healthgate::fuzzing::admin(data);
    });
}
