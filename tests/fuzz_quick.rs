//! The fuzz targets' quick versions (the long runs: `fuzz/run.sh`, RELIABILITY.md): every seed
//! of `fuzz/corpus/TARGET/`, then random mutations of them (bit flips, inserted and deleted
//! bytes, truncation, splices), through the same entry points the fuzzers use. A separate test
//! binary, because it counts every panic in the process (server tasks included): any is a
//! failure, and afterwards the server must still answer.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("entry").path()).expect("seed"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.sort();
    seeds
}

/// One edit of a seed.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// Appends part of another seed.
    Splice(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => (any::<usize>(), 1usize..32).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(s, i)| Edit::Splice(s, i)),
    ];
    proptest::collection::vec(edit, 0..8)
}

fn mutate(seed: &[u8], edits: &[Edit], all: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for edit in edits {
        let len = data.len().max(1);
        match edit {
            Edit::Flip(i, b) if !data.is_empty() => data[i % len] ^= b | 1,
            Edit::Insert(i, bytes) => {
                let at = i % (data.len() + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(i, n) if !data.is_empty() => {
                let at = i % len;
                let end = (at + n).min(data.len());
                data.drain(at..end);
            }
            Edit::Truncate(i) => data.truncate(i % (data.len() + 1)),
            Edit::Splice(s, i) => {
                let other = &all[s % all.len()];
                data.extend_from_slice(&other[i % (other.len() + 1)..]);
            }
            _ => {}
        }
    }
    data
}

fn run(target: &str, cases: u32, drive: fn(&[u8])) {
    count_panics();
    let seeds = seeds(target);
    for seed in &seeds {
        drive(seed);
    }
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..seeds.len(), edits());
    runner
        .run(&strategy, |(i, edits)| {
            drive(&mutate(&seeds[i], &edits, &seeds));
            prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic (see above)");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{target}: {e}"));
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "{target}: a panic (see above)"
    );
}

#[test]
fn config_inputs_never_panic() {
    run("config", 400, healthgate::fuzzing::config);
}

#[test]
fn state_file_inputs_never_panic() {
    run("state_file", 300, healthgate::fuzzing::state_file);
    assert!(healthgate::fuzzing::still_serving());
}

#[test]
fn http_inputs_never_panic_and_the_server_keeps_serving() {
    run("http", 150, healthgate::fuzzing::http);
    assert!(healthgate::fuzzing::still_serving());
}

#[test]
fn grpc_inputs_never_panic_and_the_server_keeps_serving() {
    run("grpc", 150, healthgate::fuzzing::grpc);
    assert!(healthgate::fuzzing::still_serving());
}

#[test]
fn admin_inputs_never_panic_and_the_server_keeps_serving() {
    run("admin", 150, healthgate::fuzzing::admin);
    assert!(healthgate::fuzzing::still_serving());
}
