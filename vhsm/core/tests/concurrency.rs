//! `Vhsm` is `Send + Sync` and stays consistent when crypto calls race key management and seal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use vhsm_core::{DecryptInput, Error, Vhsm};

fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn vhsm_is_send_and_sync() {
    assert_send_sync::<Vhsm>();
    assert_send_sync::<Arc<Vhsm>>();
}

#[test]
fn crypto_races_rotation_state_changes_and_seal() {
    let (_s, _c, v) = unsealed();
    let v = Arc::new(v);
    v.create_key(new_key("hot", &[]), "admin").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let v = v.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut ok = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let pt = format!("thread {t} message {ok}");
                    match v.encrypt("hot", pt.as_bytes(), b"aad") {
                        Ok(ct) => {
                            let input = DecryptInput {
                                ciphertext: &ct.ciphertext,
                                iv: &ct.iv,
                                tag: &ct.tag,
                                aad: b"aad",
                                metadata: &ct.metadata,
                            };
                            match v.decrypt("hot", &input) {
                                Ok(p) => {
                                    assert_eq!(&*p, pt.as_bytes());
                                    ok += 1;
                                }
                                // A disable or seal may land between the two calls.
                                Err(Error::KeyDisabled(_)) | Err(Error::Sealed) => {}
                                Err(e) => panic!("unexpected decrypt error {e:?}"),
                            }
                        }
                        Err(Error::KeyDisabled(_)) | Err(Error::Sealed) => {}
                        Err(e) => panic!("unexpected encrypt error {e:?}"),
                    }
                }
                ok
            })
        })
        .collect();
    for round in 0..20 {
        v.rotate_key("hot", "admin").unwrap();
        v.disable_key("hot", "admin").unwrap();
        v.enable_key("hot", "admin").unwrap();
        if round % 5 == 4 {
            v.seal("admin").unwrap();
            v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let total: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(total > 0);
    assert_eq!(v.describe_key("hot").unwrap().current_version, 21);
    let records = v.audit_records(1, 10_000).unwrap();
    vhsm_audit::verify_chain(&records, &v.audit_public_key().unwrap(), None).unwrap();
}
