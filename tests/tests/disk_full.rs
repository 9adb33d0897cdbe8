//! Fail-stop on a full disk (issue 11): vhsmd's store lives on a small tmpfs that is then
//! filled. The next change fails with a clear error naming the storage failure, vhsmd seals
//! and exits instead of going on with state that may differ from the disk, and once space is
//! freed a restart unseals with every acknowledged change and an audit chain that verifies.
//! Mounting needs root (CI runs as root); elsewhere the test says so and does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vhsm_e2e::admin::Admin;
use vhsm_e2e::procs::{bin_path, read_log, VhsmdProc};

const PASS: &str = "disk full passphrase";

/// A tmpfs mounted at `path`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .ok()?;
        out.status.success().then(|| Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes 256 KiB chunks into `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 256 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

fn lines(v: &[&str]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn a_full_disk_fails_stop_and_a_restart_keeps_every_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = Command::new(bin_path("vhsm-admin"))
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(out.status.success());
    // The node's data directory (dir/vhsm-1) is the tmpfs; its config and log stay outside.
    let Some(_disk) = Tmpfs::mount(&dir.path().join("vhsm-1"), "48M") else {
        eprintln!("disk_full: cannot mount a tmpfs here (not root?): the test does nothing");
        return;
    };
    let mut node = VhsmdProc::start(dir.path(), &pki, "vhsm-1").unwrap();
    let admin = Admin::new(&node.endpoint(), &pki);
    admin
        .ok(&["init", "--passphrase"], &lines(&[PASS, PASS]))
        .unwrap();
    admin.ok(&["unseal"], &lines(&[PASS])).unwrap();
    for id in ["k1", "k2", "k3"] {
        admin.ok(&["key", "create", id], "").unwrap();
    }
    admin.ok(&["key", "disable", "k2"], "").unwrap();

    let filler = dir.path().join("vhsm-1").join("filler");
    let filled = fill(&filler);
    eprintln!("disk_full: filled the store's file system with {filled} bytes");
    // Changes until one fails (sled may still have room in a preallocated segment).
    let mut failed = None;
    let mut acknowledged = Vec::new();
    for i in 0..200 {
        let id = format!("late-{i}");
        let r = admin.run(&["key", "create", &id], "").unwrap();
        if r.code == 0 {
            acknowledged.push(id);
            continue;
        }
        failed = Some((id, r));
        break;
    }
    let (failed_id, r) = failed.expect("no change failed on a full disk");
    eprintln!(
        "disk_full: {} change(s) acknowledged after the fill, then: {}",
        acknowledged.len(),
        r.stderr.trim()
    );
    assert!(
        r.stderr.contains("storage") || r.stderr.contains("no quorum"),
        "the error does not say what happened: {}",
        r.stderr
    );
    // The node stops by itself (fail-stop) and says why.
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = read_log(&node.log);
    assert!(
        !node.is_running(),
        "vhsmd kept running after a failed write; log:\n{log}"
    );
    assert!(log.contains("fail-stop"), "no fail-stop in the log:\n{log}");

    // Space is freed; the node restarts sealed and unseals from what is on disk.
    std::fs::remove_file(&filler).unwrap();
    node.restart().unwrap();
    admin.ok(&["unseal"], &lines(&[PASS])).unwrap();
    let keys = admin.json(&["key", "list"], "").unwrap();
    let ids: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    for id in ["k1", "k2", "k3"]
        .into_iter()
        .chain(acknowledged.iter().map(String::as_str))
    {
        assert!(ids.contains(&id), "acknowledged key {id} lost: {ids:?}");
    }
    let k2 = admin.json(&["key", "show", "k2"], "").unwrap();
    assert_eq!(k2["state"], "DISABLED", "{k2}");
    // The failed key is either wholly there (with its audit record) or not at all.
    let log_path = dir.path().join("audit.jsonl");
    admin
        .ok(
            &["audit", "export", "--out", log_path.to_str().unwrap()],
            "",
        )
        .unwrap();
    let public = format!("{}.pub", log_path.display());
    admin
        .ok(
            &[
                "audit",
                "verify",
                "--log",
                log_path.to_str().unwrap(),
                "--public-key",
                &public,
            ],
            "",
        )
        .unwrap();
    let audit = std::fs::read_to_string(&log_path).unwrap();
    let audited = audit.contains(&format!("\"key_id\":\"{failed_id}\""));
    assert_eq!(
        ids.contains(&failed_id.as_str()),
        audited,
        "key {failed_id}: present = {}, audited = {audited}",
        ids.contains(&failed_id.as_str())
    );
    // And the store takes changes again.
    admin.ok(&["key", "create", "after-recovery"], "").unwrap();
}
