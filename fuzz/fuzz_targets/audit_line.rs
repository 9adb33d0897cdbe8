//! Fuzzes the audit-log decoders of vhsm-audit: one JSON line (`AuditRecord::from_json_line`,
//! which vhsmd applies to every stored record), a whole JSON-lines log (`parse_log`) and the
//! offline chain verifier (`verify_chain`, as `vhsm-admin audit verify` runs it).
//! Properties: no panic; an accepted line re-encodes (`to_json_line`) to one line without a
//! newline that decodes to an equal record with the same hash; the verifier returns a typed
//! result for any parsed log, and a log it accepts ends at the head it reports.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhsm_audit::{parse_log, verify_chain, AuditRecord};

/// Public key the verifier checks signatures against (seed 7; the seeds are unsigned).
fn public_key() -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_bytes()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Ok(record) = AuditRecord::from_json_line(line) {
            let again = record.to_json_line();
            assert!(!again.contains('\n'), "re-encoded record spans lines");
            match AuditRecord::from_json_line(&again) {
                Ok(back) => {
                    assert!(back == record, "re-encoded record decodes differently");
                    assert_eq!(back.hash(), record.hash(), "hash not stable");
                }
                Err(_) => panic!("re-encoded record does not decode"),
            }
        }
    }
    if let Ok(records) = parse_log(text) {
        if let Ok(v) = verify_chain(&records, &public_key(), None) {
            let last = &records[records.len() - 1];
            assert_eq!(v.head_seq, last.seq, "verified head is not the last record");
            assert_eq!(v.head_hash, last.hash_hex(), "verified head hash differs");
            assert_eq!(v.records, records.len() as u64, "record count differs");
            let head = Some((v.head_seq, v.head_hash.as_str()));
            assert!(
                verify_chain(&records, &public_key(), head).is_ok(),
                "log fails against its own head"
            );
        }
    }
});
