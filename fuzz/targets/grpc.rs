//! Fuzz target `grpc`: see `healthgate::fuzzing::grpc` and RELIABILITY.md.

fn main() {
    healthgate::fuzzing::init();
    afl::fuzz!(|data: &[u8]| {
        healthgate::fuzzing::grpc(data);
    });
}
