//! Crash points: vhsmd is killed with SIGKILL at random moments while vhsm-admin creates,
//! imports, rotates, disables and enables keys, schedules and cancels deletions, sets minimum
//! decryption versions, rekeys, backs up and restores, and while gRPC Encrypts run. After every
//! kill the node restarts and unseals, and every acknowledged change must be there, a cut-off
//! one fully applied or not at all, the audit chain must verify and keep every record seen
//! before, and every enabled key must still encrypt and decrypt (`vhsm_e2e::crash`).
//!
//! The short runs are CI tests; the long run is `VHSM_CRASH_POINTS=250 cargo test -p vhsm-e2e
//! --test crash_points -- --ignored --nocapture` (docs/reliability.md). A failure prints its
//! seed: `VHSM_CRASH_SEED=<seed>` replays the same operations and kill delays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vhsm_e2e::crash::driver::{run, Options};

fn run_and_print(default_points: usize, nodes: usize) {
    let opts = Options::from_env(default_points, nodes);
    match run(&opts) {
        Ok(report) => {
            eprintln!("{report}");
            assert_eq!(report.kill_points() as usize, opts.kill_points);
        }
        Err(e) => panic!("{e:?}"),
    }
}

/// CI: 20 kill points on a single node (every operation kind can come up).
#[test]
fn kill_9_at_random_points_on_a_single_node() {
    run_and_print(20, 1);
}

/// CI: 6 kill points of the leader of a three-node cluster (key operations and encrypts).
#[test]
fn kill_9_of_the_leader_at_random_points_in_a_cluster() {
    run_and_print(6, 3);
}

/// The long run (250 kill points unless VHSM_CRASH_POINTS says otherwise).
#[test]
#[ignore = "long run: minutes; see docs/reliability.md"]
fn long_run_kill_9_at_random_points_on_a_single_node() {
    run_and_print(250, 1);
}
