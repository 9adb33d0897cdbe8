//! The replicated HA group end to end: three real vhsmd processes (one Raft cluster over
//! mutual TLS) behind a real xks-front, driven by vhsm-admin and KMS-shaped requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use vhsm_e2e::procs::{KeyStoreSpec, XksFrontProc};
use vhsm_e2e::{Appliance, ApplianceOptions, XksClient};

const AKID: &str = "AKIAE2ECLUSTERAAAAAA";
const SECRET: &str = "c2VjcmV0LWZvci10aGUtY2x1c3Rlci1lMmUtdGVzdHMtMTI=";
const PREFIX: &str = "/example";
const PASS: &str = "correct horse battery staple";

fn api(path: &str) -> String {
    format!("{PREFIX}/kms/xks/v1{path}")
}

fn meta(op: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": op,
        "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae"
    })
}

fn encrypt_body(pt: &[u8]) -> Value {
    json!({
        "requestMetadata": meta("Encrypt"),
        "plaintext": B64.encode(pt),
        "encryptionAlgorithm": "AES_GCM"
    })
}

fn decrypt_body(enc: &Value) -> Value {
    json!({
        "requestMetadata": meta("Decrypt"),
        "encryptionAlgorithm": "AES_GCM",
        "ciphertext": enc["ciphertext"],
        "ciphertextMetadata": enc["ciphertextMetadata"],
        "initializationVector": enc["initializationVector"],
        "authenticationTag": enc["authenticationTag"]
    })
}

/// Three voters behind one xks-front that serves every key.
async fn cluster() -> (Appliance, XksFrontProc, XksClient) {
    cluster_with(String::new()).await
}

/// [`cluster`] with `keys_toml` in every node's `[keys]` section.
async fn cluster_with(keys_toml: String) -> (Appliance, XksFrontProc, XksClient) {
    cluster_of(ApplianceOptions {
        nodes: 3,
        keys_toml,
        ..ApplianceOptions::default()
    })
    .await
}

/// Three nodes made with `opts` behind one xks-front that serves every key.
async fn cluster_of(opts: ApplianceOptions) -> (Appliance, XksFrontProc, XksClient) {
    let app = tokio::task::spawn_blocking(move || Appliance::start(&opts))
        .await
        .unwrap()
        .unwrap();
    let xks_dir = app.dir.path().join("xks");
    std::fs::create_dir_all(&xks_dir).unwrap();
    let store = KeyStoreSpec {
        name: "default".into(),
        path_prefix: PREFIX.into(),
        keys: vec!["*".into()],
        credentials: vec![(AKID.into(), SECRET.into())],
        rate_limit_per_sec: 50_000,
        burst: 50_000,
        extra_toml: String::new(),
    };
    let front = XksFrontProc::start(
        &xks_dir,
        &app.pki,
        &[&app.nodes[0], &app.nodes[1], &app.nodes[2]],
        &[store],
        2,
    )
    .unwrap();
    let client = XksClient::new(front.addr, &app.pki, None, AKID, SECRET).unwrap();
    (app, front, client)
}

async fn admin_ok(app: &Appliance, node: usize, args: &[&str]) -> String {
    let admin = app.admin(node);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        admin.ok(&a, "")
    })
    .await
    .unwrap()
    .unwrap()
}

async fn key_json(app: &Appliance, node: usize, id: &str) -> Value {
    let admin = app.admin(node);
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || admin.json(&["key", "show", &id], ""))
        .await
        .unwrap()
        .unwrap()
}

/// Encrypts `n` times through xks-front (round-robin over the nodes); returns how many
/// succeeded and one successful answer.
async fn encrypt_n(client: &XksClient, key: &str, n: usize) -> (usize, Option<Value>) {
    let mut ok = 0;
    let mut last = None;
    for i in 0..n {
        let r = client
            .post(
                &api(&format!("/keys/{key}/encrypt")),
                &encrypt_body(&(i as u32).to_be_bytes()),
            )
            .await
            .unwrap();
        if r.status == 200 {
            ok += 1;
            last = Some(r.body);
        }
    }
    (ok, last)
}

async fn decrypts_everywhere(client: &XksClient, key: &str, enc: &Value, times: usize) -> usize {
    let mut ok = 0;
    for _ in 0..times {
        let r = client
            .post(&api(&format!("/keys/{key}/decrypt")), &decrypt_body(enc))
            .await
            .unwrap();
        if r.status == 200 {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_change_on_one_node_holds_on_every_node() {
    let (app, _front, client) = cluster().await;
    // create on node 2: every node serves it at once (round-robin spreads the 30 requests).
    admin_ok(
        &app,
        1,
        &["key", "create", "k1", "--usage", "encrypt,decrypt"],
    )
    .await;
    let (ok, v1) = encrypt_n(&client, "k1", 30).await;
    assert_eq!(ok, 30, "encrypts right after create on another node");
    let v1 = v1.unwrap();
    // rotate on node 3: new ciphertexts are version 2 and decrypt through every node.
    admin_ok(&app, 2, &["key", "rotate", "k1"]).await;
    let (ok, v2) = encrypt_n(&client, "k1", 30).await;
    assert_eq!(ok, 30);
    let v2 = v2.unwrap();
    assert_ne!(v1["ciphertextMetadata"], v2["ciphertextMetadata"]);
    assert_eq!(decrypts_everywhere(&client, "k1", &v2, 30).await, 30);
    for node in 0..3 {
        assert_eq!(
            key_json(&app, node, "k1").await["current_version"],
            2,
            "node {node}"
        );
    }
    // disable on node 1: once the command returns, not one encrypt succeeds anywhere.
    let started = Instant::now();
    admin_ok(&app, 0, &["key", "disable", "k1"]).await;
    let kill_switch = started.elapsed();
    let (ok, _) = encrypt_n(&client, "k1", 60).await;
    assert_eq!(
        ok, 0,
        "encrypts that succeeded after `key disable` returned"
    );
    eprintln!(
        "kill switch: `key disable` returned after {kill_switch:?} with every member applied"
    );
    // enable on node 2, then raise the minimum decryption version on node 3.
    admin_ok(&app, 1, &["key", "enable", "k1"]).await;
    assert_eq!(encrypt_n(&client, "k1", 30).await.0, 30);
    admin_ok(&app, 2, &["key", "min-decryption-version", "k1", "2"]).await;
    assert_eq!(decrypts_everywhere(&client, "k1", &v1, 30).await, 0);
    assert_eq!(decrypts_everywhere(&client, "k1", &v2, 30).await, 30);
    // schedule deletion on node 1: pending everywhere, and no node encrypts.
    admin_ok(&app, 0, &["key", "schedule-deletion", "k1", "--days", "7"]).await;
    for node in 0..3 {
        assert_eq!(
            key_json(&app, node, "k1").await["state"],
            "PENDING_DELETION",
            "node {node}"
        );
    }
    assert_eq!(encrypt_n(&client, "k1", 30).await.0, 0);
    // One audit chain: every node reports the same head.
    let mut heads = Vec::new();
    for node in 0..3 {
        let admin = app.admin(node);
        let s = tokio::task::spawn_blocking(move || admin.json(&["status"], ""))
            .await
            .unwrap()
            .unwrap();
        heads.push(s["audit_head_hash"].clone());
    }
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
}

/// A member that no longer hears from the others keeps its read lease for a while: a kill
/// switch returns only once that member has applied it or its lease has certainly run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_switch_holds_on_a_member_cut_off_from_the_others() {
    let (app, _front, client) = cluster_of(ApplianceOptions {
        nodes: 3,
        peer_proxies: true,
        ..ApplianceOptions::default()
    })
    .await;
    admin_ok(
        &app,
        0,
        &["key", "create", "k1", "--usage", "encrypt,decrypt"],
    )
    .await;
    assert_eq!(encrypt_n(&client, "k1", 30).await.0, 30);
    let leader = leader_index(&app);
    let cut = (0..3).find(|i| *i != leader).unwrap();
    // The leader's messages no longer reach `cut`; `cut` still reaches the leader (so it
    // keeps asking for a read index) and xks-front still reaches `cut`.
    app.proxies[cut].cut();
    let started = Instant::now();
    admin_ok(&app, leader, &["key", "disable", "k1"]).await;
    let returned = started.elapsed();
    let (ok, _) = encrypt_n(&client, "k1", 60).await;
    assert_eq!(
        ok, 0,
        "encrypts that succeeded after `key disable` returned (member {cut} cut off)"
    );
    eprintln!("kill switch with a member cut off: returned after {returned:?}");
    // Healed, it catches up, shows the change and serves again.
    app.proxies[cut].heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let admin = app.admin(cut);
        let s = tokio::task::spawn_blocking(move || admin.json(&["cluster", "status"], ""))
            .await
            .unwrap();
        if matches!(&s, Ok(s) if s["serving"] == true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member {cut} never caught up: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(key_json(&app, cut, "k1").await["state"], "DISABLED");
    assert_eq!(encrypt_n(&client, "k1", 30).await.0, 0);
}

/// The kill switch's lease bound assumes one lease length: a member configured with another
/// neither unseals nor gets a read lease (and says why) while the others keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_another_lease_length_never_serves() {
    let (mut app, _front, client) = cluster().await;
    let leader = leader_index(&app);
    let odd = (0..3).find(|i| *i != leader).unwrap();
    app.nodes[odd].stop();
    let config = std::fs::read_to_string(&app.nodes[odd].config).unwrap();
    let config = config.replace("[cluster]\n", "[cluster]\nlease_ms = 3000\n");
    std::fs::write(&app.nodes[odd].config, config).unwrap();
    app.nodes[odd].restart().unwrap();
    // Unseal needs to confirm the node is current, and the leader refuses: fail closed.
    let e = app
        .admin(odd)
        .ok(&["unseal"], &format!("{PASS}\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lease_ms 3000 differs from the leader's 2000"),
        "{e}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = app.admin(odd).json(&["cluster", "status"], "").unwrap();
        if s["not_serving_reason"]
            .as_str()
            .is_some_and(|r| r.contains("differs from the leader's"))
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no lease refusal seen: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["serving"], false, "{status}");
    // xks-front fails over to the members that serve.
    assert_eq!(encrypt_n(&client, "demo-key", 30).await.0, 30);
}

fn leader_index(app: &Appliance) -> usize {
    let s = app.admin(0).json(&["cluster", "status"], "").unwrap();
    let leader = s["leader_id"].as_u64().unwrap();
    let members = s["members"].as_array().unwrap();
    let addr = members
        .iter()
        .find(|m| m["raft_id"].as_u64() == Some(leader))
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    (0..app.nodes.len())
        .find(|i| app.peer_endpoint(*i) == addr)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_writes_loses_no_acknowledged_write() {
    let (mut app, _front, _client) = cluster().await;
    let app_ref = &mut app;
    let leader = leader_index(app_ref);
    let writer = (leader + 1) % 3;
    let mut acked = Vec::new();
    let mut killed_at = None;
    let mut first_ok_after_kill = None;
    for i in 0..40 {
        if i == 10 {
            app_ref.nodes[leader].kill_hard();
            killed_at = Some(Instant::now());
        }
        let id = format!("w-{i}");
        let r = app_ref
            .admin(writer)
            .run(&["key", "create", &id, "--usage", "encrypt,decrypt"], "")
            .unwrap();
        if r.code == 0 {
            acked.push(id);
            if killed_at.is_some() && first_ok_after_kill.is_none() {
                first_ok_after_kill = killed_at.map(|k| k.elapsed());
            }
        }
    }
    let recovered = first_ok_after_kill.expect("no write succeeded after the leader was killed");
    eprintln!(
        "writes accepted again {recovered:?} after kill -9 of the leader; {} acknowledged",
        acked.len()
    );
    assert!(recovered < Duration::from_secs(2), "{recovered:?}");
    // The old leader comes back (sealed), catches up; every acknowledged key is on every node.
    app_ref.nodes[leader].restart().unwrap();
    app_ref
        .admin(leader)
        .ok(&["unseal"], &format!("{PASS}\n"))
        .unwrap();
    for node in 0..3 {
        let list = app_ref.admin(node).json(&["key", "list"], "").unwrap();
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|k| k["key_id"].as_str())
            .collect();
        for id in &acked {
            assert!(
                ids.contains(&id.as_str()),
                "node {node} lacks acknowledged {id}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_load_while_a_node_dies_and_returns() {
    let (mut app, _front, client) = cluster().await;
    let rate = 100u32; // requests per second, each an encrypt + decrypt pair
    let secs = 30u32;
    let victim = 2usize;
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut last_ok = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut killed = false;
    let mut restarted = false;
    for i in 0..rate * secs {
        let due = started + Duration::from_secs_f64(f64::from(i) / f64::from(rate));
        tokio::time::sleep_until(due.into()).await;
        let t = started.elapsed();
        if !killed && t > Duration::from_secs(10) {
            app.nodes[victim].kill_hard();
            killed = true;
        }
        if killed && !restarted && t > Duration::from_secs(20) {
            let n = &mut app.nodes[victim];
            n.restart().unwrap();
            app.admin(victim)
                .ok(&["unseal"], &format!("{PASS}\n"))
                .unwrap();
            restarted = true;
        }
        let enc = client
            .post(
                &api("/keys/demo-key/encrypt"),
                &encrypt_body(&i.to_be_bytes()),
            )
            .await
            .unwrap();
        let ok = enc.status == 200
            && client
                .post(&api("/keys/demo-key/decrypt"), &decrypt_body(&enc.body))
                .await
                .unwrap()
                .status
                == 200;
        if ok {
            longest_gap = longest_gap.max(last_ok.elapsed());
            last_ok = Instant::now();
        } else {
            failed.push((i, enc.status));
        }
    }
    eprintln!(
        "KMS-shaped load {rate}/s for {secs} s, node {victim} killed at 10 s and back at 20 s: \
         {} of {} requests failed, longest gap between successes {longest_gap:?}",
        failed.len(),
        rate * secs
    );
    assert!(failed.is_empty(), "failed: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_to_a_populated_cluster_catches_up_and_serves() {
    let (mut app, _front, _client) = cluster().await;
    let keys: usize = std::env::var("VHSM_E2E_JOIN_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut crypto = vhsm_e2e::grpc::admin(&app.nodes[0].endpoint(), &app.pki)
        .await
        .unwrap();
    for i in 0..keys {
        crypto
            .create_key(vhsm_proto::v1::CreateKeyRequest {
                key_id: format!("bulk-{i}"),
                usage: vec![1, 2],
                labels: Default::default(),
            })
            .await
            .unwrap();
    }
    let dir = app.dir.path().to_owned();
    let pki = app.pki.clone();
    let joiner =
        vhsm_e2e::procs::VhsmdProc::start_member(&dir, &pki, "vhsm-4", false, false).unwrap();
    let addr = joiner.endpoint();
    app.nodes.push(joiner);
    let started = Instant::now();
    admin_ok(&app, 0, &["cluster", "add-node", "--address", &addr]).await;
    let caught_up = started.elapsed();
    if let Err(e) = app.admin(3).ok(&["unseal"], &format!("{PASS}\n")) {
        let cs = app.admin(3).ok(&["cluster", "status"], "");
        let log = vhsm_e2e::procs::read_log(&app.nodes[3].log);
        panic!("unseal of the new node failed: {e}\n{cs:?}\n{log}");
    }
    let status = app.admin(3).json(&["status"], "").unwrap();
    assert_eq!(
        status["key_count"].as_u64().unwrap() as usize,
        keys + 2,
        "{status}"
    );
    eprintln!(
        "a node joining a cluster of {} keys caught up in {caught_up:?}",
        keys + 2
    );
    // The log below the leader's snapshot was purged: the store reached it as a snapshot.
    let cs = app.admin(3).json(&["cluster", "status"], "").unwrap();
    assert!(cs["last_snapshot_index"].as_u64().unwrap() > 0, "{cs}");
    let mut c = vhsm_e2e::grpc::crypto(&addr, &app.pki).await.unwrap();
    let mut served = false;
    for _ in 0..50 {
        if c.encrypt(vhsm_proto::v1::EncryptRequest {
            key_id: format!("bulk-{}", keys - 1),
            plaintext: b"joined".to_vec(),
            aad: Vec::new(),
            request_id: String::new(),
            integrity_check: false,
        })
        .await
        .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the new node did not serve");
}

/// Encrypts directly on `node` (as xks-front would); the wire reason on failure.
async fn encrypt_on(
    c: &mut vhsm_proto::v1::crypto_client::CryptoClient<tonic::transport::Channel>,
    key: &str,
) -> Result<vhsm_proto::v1::EncryptResponse, vhsm_proto::v1::Reason> {
    c.encrypt(vhsm_proto::v1::EncryptRequest {
        key_id: key.into(),
        plaintext: b"counted".to_vec(),
        aad: Vec::new(),
        request_id: String::new(),
        integrity_check: false,
    })
    .await
    .map(tonic::Response::into_inner)
    .map_err(|s| vhsm_proto::reason_of(&s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_aes_gcm_limit_bounds_the_encryptions_of_every_node() {
    use vhsm_proto::v1::Reason;
    const LIMIT: u64 = 300;
    let (app, _front, client) = cluster_with(format!(
        "gcm_invocation_limit = {LIMIT}\ngcm_reservation_block = 40\ngcm_warn_percent = 50\n"
    ))
    .await;
    admin_ok(
        &app,
        0,
        &["key", "create", "g1", "--usage", "encrypt,decrypt"],
    )
    .await;
    let mut nodes = Vec::new();
    for n in &app.nodes {
        nodes.push(
            vhsm_e2e::grpc::crypto(&n.endpoint(), &app.pki)
                .await
                .unwrap(),
        );
    }
    // Round-robin until every node refuses with the limit: each reserves its own blocks, and
    // together they make exactly LIMIT encryptions.
    let (mut ok, mut exhausted_in_a_row, mut first) = (0u64, 0, None);
    for i in 0..(LIMIT as usize * 3) {
        match encrypt_on(&mut nodes[i % 3], "g1").await {
            Ok(out) => {
                ok += 1;
                exhausted_in_a_row = 0;
                first.get_or_insert(out);
            }
            Err(Reason::KeyVersionExhausted) => {
                exhausted_in_a_row += 1;
                if exhausted_in_a_row == 3 {
                    break;
                }
            }
            Err(other) => panic!("encrypt {i} on node {}: {other:?}", i % 3),
        }
    }
    assert_eq!(exhausted_in_a_row, 3, "every node refuses at the limit");
    assert_eq!(
        ok, LIMIT,
        "encryptions made under version 1 by the three nodes"
    );
    for node in 0..3 {
        let k = key_json(&app, node, "g1").await;
        assert_eq!(k["encryptions_reserved"], LIMIT, "node {node}: {k}");
        assert_eq!(k["encryption_limit"], LIMIT, "node {node}");
    }
    // KMS sees InvalidStateException; decryption still works.
    let r = client
        .post(&api("/keys/g1/encrypt"), &encrypt_body(b"x"))
        .await
        .unwrap();
    assert_eq!(r.error_name(), "InvalidStateException", "{:?}", r.body);
    let first = first.unwrap();
    let mut c = nodes[1].clone();
    c.decrypt(vhsm_proto::v1::DecryptRequest {
        key_id: "g1".into(),
        ciphertext: first.ciphertext,
        iv: first.iv,
        tag: first.tag,
        metadata: first.metadata,
        ..Default::default()
    })
    .await
    .unwrap();
    // Rotation starts a new count, on every node.
    admin_ok(&app, 2, &["key", "rotate", "g1"]).await;
    for c in &mut nodes {
        encrypt_on(c, "g1").await.unwrap();
    }
    let k = key_json(&app, 0, "g1").await;
    assert_eq!(k["current_version"], 2);
    assert!(k["encryptions_reserved"].as_u64().unwrap() <= 120, "{k}");
    // Each reservation is in the one audit chain, with the running total.
    let admin = app.admin(1);
    let audit = tokio::task::spawn_blocking(move || admin.ok(&["audit", "tail", "-n", "200"], ""))
        .await
        .unwrap()
        .unwrap();
    assert!(audit.contains("key.reserve_invocations"), "{audit}");
}
