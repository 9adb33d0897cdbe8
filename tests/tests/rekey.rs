//! Two-phase rekey with the real vhsmd and vhsm-admin: a staging whose commit never happens
//! (lost response) leaves the old configuration working across a restart; a full rekey puts
//! the new shares in force; custodians can finish an interrupted rekey with `rekey --commit`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vhsm_e2e::procs::VhsmdProc;
use vhsm_e2e::{bin_path, Admin};
use vhsm_proto::v1::{
    init_request, ExportAuditRequest, InitRequest, RekeyRequest, RekeyStageResponse,
    ShareSubmission, SharesMode,
};

const PASS: &str = "the appliance passphrase";
const NEW: [&str; 3] = [
    "new custodian A pass",
    "new custodian B pass",
    "new custodian C pass",
];

fn pki_init(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    let out = Command::new(bin_path("vhsm-admin"))
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pki
}

fn lines(items: &[&str]) -> String {
    items.iter().map(|s| format!("{s}\n")).collect()
}

fn share_file(dir: &Path, k: usize, n: usize) -> String {
    dir.join(format!("share-{k}-of-{n}.vhsmshare"))
        .to_string_lossy()
        .into_owned()
}

fn seal_state(admin: &Admin) -> String {
    let v = admin.json(&["status"], "").unwrap();
    v["seal_state"].as_str().unwrap_or_default().to_string()
}

fn restart(node: &mut VhsmdProc, admin: &Admin) {
    node.stop();
    node.restart().unwrap();
    assert_eq!(seal_state(admin), "sealed");
}

/// Calls RekeyStage directly and "loses" the response after saving its shares: what a CLI
/// that crashed (or a dropped connection) after the stage leaves behind.
fn stage_only(
    rt: &tokio::runtime::Runtime,
    node: &VhsmdProc,
    pki: &Path,
    req: RekeyRequest,
    out_dir: &Path,
) -> RekeyStageResponse {
    let staged = rt.block_on(async {
        let mut c = vhsm_e2e::grpc::admin(&node.endpoint(), pki).await.unwrap();
        c.rekey_stage(req).await.unwrap().into_inner()
    });
    std::fs::create_dir_all(out_dir).unwrap();
    for s in &staged.shares {
        let n = staged.shares.len();
        std::fs::write(share_file(out_dir, s.index as usize, n), &s.share).unwrap();
    }
    staged
}

fn shares_config(threshold: u32, pass: &[&str]) -> Option<InitRequest> {
    Some(InitRequest {
        mode: Some(init_request::Mode::Shares(SharesMode {
            threshold,
            custodian_passphrases: pass.iter().map(|p| p.to_string()).collect(),
        })),
    })
}

#[test]
fn an_uncommitted_rekey_leaves_the_old_config_then_a_full_rekey_replaces_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_init(dir.path());
    let mut node = VhsmdProc::start(dir.path(), &pki, "vhsm-1").unwrap();
    let admin = Admin::new(&node.endpoint(), &pki);
    admin
        .ok(&["init", "--passphrase"], &lines(&[PASS, PASS]))
        .unwrap();
    admin.ok(&["unseal"], &lines(&[PASS])).unwrap();
    admin.ok(&["key", "create", "survivor"], "").unwrap();

    // 1. Stage 2-of-3; the commit never happens.
    let lost = dir.path().join("lost-shares");
    let staged = stage_only(
        &rt,
        &node,
        &pki,
        RekeyRequest {
            old_passphrase: PASS.into(),
            old_shares: Vec::new(),
            new_config: shares_config(2, &NEW),
        },
        &lost,
    );
    assert_eq!((staged.threshold, staged.share_count), (2, 3));
    let st = admin.json(&["status"], "").unwrap();
    assert_eq!(st["rekey_staging_id"], staged.staging_id.as_str());
    assert_eq!(st["unseal_mode"], "passphrase");

    // 2. Restart: the OLD passphrase unseals; the staged shares do not.
    restart(&mut node, &admin);
    let r = admin
        .run(
            &["unseal", "--share", &share_file(&lost, 1, 3)],
            &lines(&[NEW[0]]),
        )
        .unwrap();
    assert_ne!(r.code, 0, "a staged share must not unseal: {}", r.stdout);
    admin.ok(&["unseal"], &lines(&[PASS])).unwrap();
    assert_eq!(seal_state(&admin), "unsealed");
    let st = admin.json(&["status"], "").unwrap();
    assert_eq!(
        st["rekey_staging_id"],
        staged.staging_id.as_str(),
        "staging survives restarts"
    );

    // 3. A full rekey (stage, write, prove, commit) to 2-of-3.
    let new_dir = dir.path().join("new-shares");
    let mut input = vec![PASS];
    input.extend(NEW);
    let r = admin
        .run(
            &[
                "rekey",
                "--old-passphrase",
                "--shares",
                "3",
                "--threshold",
                "2",
                "--share-dir",
                new_dir.to_str().unwrap(),
                "--output",
                "json",
            ],
            &lines(&input),
        )
        .unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("proving possession of 2"), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["committed"], true);
    assert_eq!(v["shares"].as_array().unwrap().len(), 3);
    assert_ne!(v["staging_id"], staged.staging_id.as_str());

    // 4. Restart: the old passphrase and the abandoned staging's shares fail; the new ones work.
    restart(&mut node, &admin);
    let r = admin.run(&["unseal"], &lines(&[PASS])).unwrap();
    assert_ne!(
        r.code, 0,
        "the old passphrase must be refused after the rekey"
    );
    for (k, pass) in [(1, NEW[0]), (2, NEW[1])] {
        let r = admin
            .run(
                &["unseal", "--share", &share_file(&lost, k, 3)],
                &lines(&[pass]),
            )
            .unwrap();
        if r.code == 0 {
            assert_eq!(
                seal_state(&admin),
                "sealed",
                "abandoned shares must not unseal"
            );
        }
    }
    admin.ok(&["unseal", "--reset"], "").unwrap();
    admin
        .ok(
            &["unseal", "--share", &share_file(&new_dir, 3, 3)],
            &lines(&[NEW[2]]),
        )
        .unwrap();
    admin
        .ok(
            &["unseal", "--share", &share_file(&new_dir, 1, 3)],
            &lines(&[NEW[0]]),
        )
        .unwrap();
    assert_eq!(seal_state(&admin), "unsealed");
    let keys = admin.json(&["key", "list"], "").unwrap();
    assert!(keys.to_string().contains("survivor"), "{keys}");

    // 5. Custodians finish an interrupted rekey (files written, CLI gone) with `rekey --commit`.
    let fin = ["final custodian one", "final custodian two"];
    let final_dir = dir.path().join("final-shares");
    let staged = stage_only(
        &rt,
        &node,
        &pki,
        RekeyRequest {
            old_passphrase: String::new(),
            old_shares: [(2, NEW[1]), (3, NEW[2])]
                .iter()
                .map(|&(k, p)| ShareSubmission {
                    share: std::fs::read(share_file(&new_dir, k, 3)).unwrap(),
                    passphrase: p.into(),
                })
                .collect(),
            new_config: shares_config(2, &fin),
        },
        &final_dir,
    );
    restart(&mut node, &admin);
    admin
        .ok(
            &[
                "unseal",
                "--share",
                &share_file(&new_dir, 2, 3),
                "--share",
                &share_file(&new_dir, 1, 3),
            ],
            &lines(&[NEW[1], NEW[0]]),
        )
        .unwrap();
    let r = admin
        .run(
            &[
                "rekey",
                "--commit",
                &staged.staging_id,
                "--share",
                &share_file(&final_dir, 1, 2),
            ],
            &lines(&[fin[0]]),
        )
        .unwrap();
    assert_ne!(r.code, 0, "one of two shares is not enough");
    assert!(
        r.stderr.contains("OLD passphrase / shares still work"),
        "{}",
        r.stderr
    );
    let r = admin
        .run(
            &[
                "rekey",
                "--commit",
                &staged.staging_id,
                "--share",
                &share_file(&final_dir, 1, 2),
                "--share",
                &share_file(&final_dir, 2, 2),
            ],
            &lines(&[fin[0], "not custodian two's passphrase"]),
        )
        .unwrap();
    assert_eq!(r.code, 4, "a wrong passphrase is rejected: {}", r.stderr);
    admin
        .ok(
            &[
                "rekey",
                "--commit",
                &staged.staging_id,
                "--share",
                &share_file(&final_dir, 2, 2),
                "--share",
                &share_file(&final_dir, 1, 2),
            ],
            &lines(&[fin[1], fin[0]]),
        )
        .unwrap();
    restart(&mut node, &admin);
    let r = admin
        .run(
            &["unseal", "--share", &share_file(&new_dir, 1, 3)],
            &lines(&[NEW[0]]),
        )
        .unwrap();
    assert_ne!(r.code, 0, "the replaced shares must be refused");
    admin
        .ok(
            &[
                "unseal",
                "--share",
                &share_file(&final_dir, 1, 2),
                "--share",
                &share_file(&final_dir, 2, 2),
            ],
            &lines(&[fin[0], fin[1]]),
        )
        .unwrap();
    assert_eq!(seal_state(&admin), "unsealed");

    // Every step is in the audit log, without secrets.
    let records = rt.block_on(async {
        let mut c = vhsm_e2e::grpc::admin(&node.endpoint(), &pki).await.unwrap();
        c.export_audit(ExportAuditRequest {
            from_seq: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .records
        .join("\n")
    });
    for event in [
        "rekey.staged",
        "rekey.replaced",
        "rekey.committed",
        "rekey.commit_rejected",
    ] {
        assert!(records.contains(&format!("\"{event}\"")), "{event} missing");
    }
    for secret in [PASS, NEW[0], fin[1]] {
        assert!(
            !records.contains(secret),
            "a passphrase is in the audit log"
        );
    }
}
