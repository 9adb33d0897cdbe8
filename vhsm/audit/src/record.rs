//! One audit record: its canonical bytes, hash, signature and JSON-lines form.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::AuditError;

/// `prev_hash` of the first record (seq 1): 64 zeros.
pub const GENESIS_PREV_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain-separation prefix of [`AuditRecord::canonical_bytes`].
pub const CANONICAL_PREFIX: &[u8] = b"vhsm-audit-v1\n";

/// One entry of the tamper-evident audit log. Never holds secrets: `details` carries ids,
/// counts and outcomes only.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// Event name, e.g. `unseal.success`, `key.create`, `access.denied`.
    pub event: String,
    /// Certificate identity of the caller, or `system`.
    pub actor: String,
    /// Event details (never secrets).
    pub details: BTreeMap<String, String>,
    /// Hex SHA-256 of the previous record's canonical bytes; [`GENESIS_PREV_HASH`] for seq 1.
    pub prev_hash: String,
    /// Hex Ed25519 signature over [`AuditRecord::canonical_bytes`]; absent when the signing
    /// key was unavailable (store sealed): a later signed record then covers it via the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The signed fields, in their fixed canonical order.
#[derive(serde::Serialize)]
struct Canonical<'a> {
    seq: u64,
    time_ms: u64,
    event: &'a str,
    actor: &'a str,
    details: &'a BTreeMap<String, String>,
    prev_hash: &'a str,
}

impl AuditRecord {
    /// A new unsigned record.
    pub fn new(
        seq: u64,
        prev_hash: impl Into<String>,
        time_ms: u64,
        event: impl Into<String>,
        actor: impl Into<String>,
        details: BTreeMap<String, String>,
    ) -> Self {
        Self {
            seq,
            time_ms,
            event: event.into(),
            actor: actor.into(),
            details,
            prev_hash: prev_hash.into(),
            signature: None,
        }
    }

    /// Deterministic bytes that are hashed and signed: [`CANONICAL_PREFIX`] followed by the
    /// compact JSON of every field except `signature`, in the order seq, time_ms, event, actor,
    /// details (keys sorted), prev_hash.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let canonical = Canonical {
            seq: self.seq,
            time_ms: self.time_ms,
            event: &self.event,
            actor: &self.actor,
            details: &self.details,
            prev_hash: &self.prev_hash,
        };
        let mut out = CANONICAL_PREFIX.to_vec();
        // INVARIANT: serializing integers, strings and a string-keyed map into a Vec cannot
        // fail (serde_json only errors on non-string map keys or I/O errors).
        #[allow(clippy::expect_used)]
        serde_json::to_writer(&mut out, &canonical).expect("canonical record serializes");
        out
    }

    /// SHA-256 of the canonical bytes.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// Lowercase hex of [`AuditRecord::hash`]: the next record's `prev_hash`.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash())
    }

    /// The record as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // INVARIANT: as for `canonical_bytes`, serializing this struct cannot fail, and
        // serde_json's compact form escapes control characters, so the output has no newline.
        #[allow(clippy::expect_used)]
        serde_json::to_string(self).expect("audit record serializes")
    }

    /// Parses one JSON line; unknown fields are refused.
    pub fn from_json_line(line: &str) -> Result<Self, AuditError> {
        serde_json::from_str(line).map_err(|_| AuditError::Malformed { line: 1 })
    }

    /// Signs the canonical bytes with `key`, replacing any previous signature.
    pub fn sign(&mut self, key: &SigningKey) {
        let signature = key.sign(&self.canonical_bytes());
        self.signature = Some(hex::encode(signature.to_bytes()));
    }

    /// True if the record carries a signature that verifies (strictly) under `key`.
    pub fn signature_valid(&self, key: &VerifyingKey) -> bool {
        let Some(sig_hex) = &self.signature else {
            return false;
        };
        let mut sig_bytes = [0u8; 64];
        if hex::decode_to_slice(sig_hex, &mut sig_bytes).is_err() {
            return false;
        }
        let signature = Signature::from_bytes(&sig_bytes);
        key.verify_strict(&self.canonical_bytes(), &signature)
            .is_ok()
    }
}

/// Parses a JSON-lines log; blank lines are skipped, errors give the 1-based line number.
pub fn parse_log(text: &str) -> Result<Vec<AuditRecord>, AuditError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            AuditRecord::from_json_line(line).map_err(|_| AuditError::Malformed { line: i + 1 })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> AuditRecord {
        let mut details = BTreeMap::new();
        details.insert("key_id".to_string(), "k1".to_string());
        details.insert("a_first".to_string(), "line\nbreak \"quoted\"".to_string());
        AuditRecord::new(
            1,
            GENESIS_PREV_HASH,
            1_700_000_000_000,
            "key.create",
            "admin",
            details,
        )
    }

    #[test]
    fn canonical_bytes_have_fixed_layout() {
        let rec = sample();
        let bytes = String::from_utf8(rec.canonical_bytes()).unwrap();
        assert_eq!(
            bytes,
            format!(
                "vhsm-audit-v1\n{{\"seq\":1,\"time_ms\":1700000000000,\"event\":\"key.create\",\
                 \"actor\":\"admin\",\"details\":{{\"a_first\":\"line\\nbreak \\\"quoted\\\"\",\
                 \"key_id\":\"k1\"}},\"prev_hash\":\"{GENESIS_PREV_HASH}\"}}"
            )
        );
    }

    #[test]
    fn signature_is_not_part_of_canonical_bytes() {
        let mut rec = sample();
        let before = rec.canonical_bytes();
        rec.sign(&SigningKey::from_bytes(&[9u8; 32]));
        assert_eq!(rec.canonical_bytes(), before);
    }

    #[test]
    fn hash_changes_with_every_field() {
        let base = sample().hash();
        let mut edits: Vec<AuditRecord> = Vec::new();
        let mut r = sample();
        r.seq = 2;
        edits.push(r);
        let mut r = sample();
        r.time_ms += 1;
        edits.push(r);
        let mut r = sample();
        r.event.push('x');
        edits.push(r);
        let mut r = sample();
        r.actor.push('x');
        edits.push(r);
        let mut r = sample();
        r.details.insert("extra".into(), String::new());
        edits.push(r);
        let mut r = sample();
        r.prev_hash = "1".repeat(64);
        edits.push(r);
        for edited in edits {
            assert_ne!(edited.hash(), base, "{edited:?}");
        }
    }

    #[test]
    fn hash_hex_is_sha256_of_canonical_bytes() {
        let rec = sample();
        assert_eq!(
            rec.hash_hex(),
            hex::encode(Sha256::digest(rec.canonical_bytes()))
        );
        assert_eq!(rec.hash_hex().len(), 64);
    }

    #[test]
    fn json_line_round_trips_and_has_no_newline() {
        let mut rec = sample();
        rec.sign(&SigningKey::from_bytes(&[9u8; 32]));
        let line = rec.to_json_line();
        assert!(!line.contains('\n'));
        assert_eq!(AuditRecord::from_json_line(&line).unwrap(), rec);
    }

    #[test]
    fn unsigned_record_omits_signature_field() {
        let line = sample().to_json_line();
        assert!(!line.contains("signature"));
        assert_eq!(AuditRecord::from_json_line(&line).unwrap().signature, None);
    }

    #[test]
    fn from_json_line_refuses_garbage_and_unknown_fields() {
        assert_eq!(
            AuditRecord::from_json_line("not json").unwrap_err(),
            AuditError::Malformed { line: 1 }
        );
        let mut value: serde_json::Value = serde_json::from_str(&sample().to_json_line()).unwrap();
        value["smuggled"] = serde_json::Value::String("x".into());
        assert!(AuditRecord::from_json_line(&value.to_string()).is_err());
        let mut value: serde_json::Value = serde_json::from_str(&sample().to_json_line()).unwrap();
        value.as_object_mut().unwrap().remove("actor");
        assert!(AuditRecord::from_json_line(&value.to_string()).is_err());
    }

    #[test]
    fn parse_log_skips_blank_lines_and_reports_line_numbers() {
        let a = sample();
        let mut b = sample();
        b.seq = 2;
        let text = format!("{}\n\n{}\n", a.to_json_line(), b.to_json_line());
        assert_eq!(parse_log(&text).unwrap(), vec![a.clone(), b]);
        let bad = format!("{}\n\n{{oops\n", a.to_json_line());
        assert_eq!(
            parse_log(&bad).unwrap_err(),
            AuditError::Malformed { line: 3 }
        );
        assert!(parse_log("").unwrap().is_empty());
    }

    #[test]
    fn signature_valid_checks_key_and_encoding() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let other = SigningKey::from_bytes(&[10u8; 32]);
        let mut rec = sample();
        assert!(!rec.signature_valid(&key.verifying_key()), "unsigned");
        rec.sign(&key);
        assert!(rec.signature_valid(&key.verifying_key()));
        assert!(!rec.signature_valid(&other.verifying_key()));
        let mut bad = rec.clone();
        bad.signature = Some("zz".into());
        assert!(!bad.signature_valid(&key.verifying_key()));
        let mut short = rec.clone();
        short.signature = Some("00".repeat(63));
        assert!(!short.signature_valid(&key.verifying_key()));
    }

    /// Seeded xorshift64* generator so every fuzz case reproduces (not for secrets).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// JSON-significant bytes and hostile ones, to reach deeper parser states than pure noise.
    const ALPHABET: &[u8] = b"{}[]:,\"\\0123456789-+.eE \t\r\ntruefalsnul\x00\x7f\xc3\xa9\xff\xfeu";

    /// One random structured mutation of `valid` (bytes; may be invalid UTF-8).
    fn mutate(valid: &[u8], rng: &mut Rng) -> Vec<u8> {
        let mut m = valid.to_vec();
        for _ in 0..=rng.below(3) {
            let pick = ALPHABET[rng.below(ALPHABET.len())];
            match rng.below(6) {
                0 if !m.is_empty() => {
                    let i = rng.below(m.len());
                    m[i] ^= 1 << rng.below(8);
                }
                1 if !m.is_empty() => {
                    let i = rng.below(m.len());
                    m[i] = pick;
                }
                2 => {
                    let i = rng.below(m.len() + 1);
                    m.insert(i, pick);
                }
                3 if !m.is_empty() => {
                    let i = rng.below(m.len());
                    m.remove(i);
                }
                4 => {
                    let cut = rng.below(m.len() + 1);
                    m.truncate(cut);
                }
                _ => {
                    // Duplicate a slice (repeats keys, nests structures).
                    let a = rng.below(m.len() + 1);
                    let b = a + rng.below(m.len() - a + 1);
                    let dup = m[a..b].to_vec();
                    let at = rng.below(m.len() + 1);
                    m.splice(at..at, dup);
                }
            }
        }
        m
    }

    #[test]
    fn from_json_line_on_random_and_mutated_lines_is_typed() {
        let mut rec = sample();
        rec.sign(&SigningKey::from_bytes(&[9u8; 32]));
        let line = rec.to_json_line();
        let mut rng = Rng(0xa0d1_7001);
        let public = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        let mut accepted_changed = 0;
        for case in 0..3000 {
            let bytes = if case % 4 == 0 {
                let n = rng.below(80);
                (0..n).map(|_| rng.next() as u8).collect()
            } else {
                mutate(line.as_bytes(), &mut rng)
            };
            let text = String::from_utf8_lossy(&bytes);
            match AuditRecord::from_json_line(&text) {
                Err(e) => assert_eq!(e, AuditError::Malformed { line: 1 }),
                Ok(parsed) => {
                    // Whatever is accepted is a whole record that round-trips.
                    let again = AuditRecord::from_json_line(&parsed.to_json_line()).unwrap();
                    assert_eq!(again, parsed);
                    if parsed.canonical_bytes() != rec.canonical_bytes() {
                        accepted_changed += 1;
                        // Ed25519 is slow in debug builds: check a bounded sample.
                        if accepted_changed <= 150 {
                            assert!(!parsed.signature_valid(&public));
                        }
                    }
                }
            }
        }
        // Sanity: the generator also produces parseable edits (e.g. whitespace, digits).
        assert!(accepted_changed > 0);
    }

    #[test]
    fn mutated_signed_logs_fail_to_parse_or_fail_verification() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let public = key.verifying_key().to_bytes();
        let mut records = Vec::new();
        let mut prev = GENESIS_PREV_HASH.to_string();
        for seq in 1..=3u64 {
            let mut r = sample();
            r.seq = seq;
            r.prev_hash = prev.clone();
            r.sign(&key);
            prev = r.hash_hex();
            records.push(r);
        }
        let head = (3u64, prev.as_str());
        let text: String = records.iter().map(|r| r.to_json_line() + "\n").collect();
        assert!(crate::verify_chain(&parse_log(&text).unwrap(), &public, Some(head)).is_ok());
        let lines = text.lines().count();
        let mut rng = Rng(0xa0d1_7002);
        for _ in 0..1000 {
            let m = mutate(text.as_bytes(), &mut rng);
            let m = String::from_utf8_lossy(&m);
            match parse_log(&m) {
                Err(AuditError::Malformed { line }) => {
                    assert!(line >= 1 && line <= m.lines().count().max(lines + 2));
                }
                Ok(parsed) => {
                    let same = parsed.len() == records.len()
                        && parsed
                            .iter()
                            .zip(&records)
                            .all(|(a, b)| a.canonical_bytes() == b.canonical_bytes());
                    // A verified log must have exactly the original content (a corrupted
                    // signature may also fail a log with the same content: not asserted).
                    if !same {
                        let verdict = crate::verify_chain(&parsed, &public, Some(head));
                        assert!(verdict.is_err(), "accepted altered log: {m:?}");
                    }
                }
            }
        }
    }
}
