//! The stored audit log: tree `Audit`, key = seq (u64be), value = one `vhsm_audit` JSON line.
//!
//! Records are chained by `prev_hash` from seq 1 and signed with the appliance Ed25519 key
//! when it is in memory (unsealed); records written while sealed are chained but unsigned.
//! Each signed record also moves the *anchor*: its seq and hash, sealed under the keyring in
//! the Meta tree, in the same batch. At unseal [`check_tail`] verifies the log from the anchor
//! to the stored head, so a cut, rewritten or forged tail is found before anything signs over
//! it (see docs/core-design.md, "Audit anchoring").

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use vhsm_audit::{AuditRecord, GENESIS_PREV_HASH};

use crate::env::RandomSource;
use crate::error::Error;
use crate::keyring::Keyring;
use crate::storage::{Storage, Tree, WriteBatch};

/// Meta-tree key of the sealed anchor (seq and hash of the newest signed record).
pub(crate) const ANCHOR_KEY: &[u8] = b"audit-anchor";
/// Detail of the `init` record (record 1) saying the store keeps an anchor: a missing anchor
/// is then tampering, not a store from before anchoring.
pub(crate) const ANCHORED_DETAIL: &str = "audit_anchor";
/// Event written by the first unseal of a store from before anchoring, when it creates the
/// anchor; from then on a missing anchor is tampering too.
pub(crate) const ANCHOR_CREATED_EVENT: &str = "audit.anchor_created";
/// Event written (signed) when an unseal goes ahead despite a tail that does not verify
/// (`AnchorMismatch::Alarm`).
pub(crate) const ANCHOR_MISMATCH_EVENT: &str = "audit.anchor_mismatch";
/// Records read per page while checking the tail.
const PAGE: usize = 4096;

/// Longest value of an audit detail or actor; longer ones are cut (they are caller-supplied).
const MAX_FIELD_LEN: usize = 256;

/// The newest record: its seq (0 = empty log) and hash (genesis when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditHead {
    pub(crate) seq: u64,
    pub(crate) hash: String,
}

impl AuditHead {
    /// The head of an empty log.
    pub(crate) fn genesis() -> Self {
        AuditHead {
            seq: 0,
            hash: GENESIS_PREV_HASH.to_string(),
        }
    }
}

/// What signs a record and moves the anchor: only available while unsealed.
pub(crate) struct Sealer<'a> {
    pub(crate) key: &'a SigningKey,
    pub(crate) ring: &'a Keyring,
    pub(crate) rng: &'a dyn RandomSource,
}

/// Details the appliance builds itself and that an offline verifier must read whole: an
/// approval policy and a proposal statement (bounded by their own limits).
const WHOLE_DETAILS: [&str; 2] = ["policy", "statement"];
/// Longest value of a [`WHOLE_DETAILS`] detail.
const MAX_WHOLE_LEN: usize = 16_384;

fn cut(s: &str) -> String {
    cut_at(s, MAX_FIELD_LEN)
}

fn cut_at(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Builds the next record after `head` and queues it in `batch`; with a sealer (unsealed) it
/// is signed and the anchor moves to it in the same batch. Returns the new head; apply it
/// only after the batch committed.
pub(crate) fn append(
    batch: &mut WriteBatch,
    head: &AuditHead,
    time_ms: u64,
    event: &str,
    actor: &str,
    details: BTreeMap<String, String>,
    sealer: Option<&Sealer<'_>>,
) -> Result<AuditHead, Error> {
    let seq = head.seq + 1;
    let details = details
        .into_iter()
        .map(|(k, v)| {
            let max = if WHOLE_DETAILS.contains(&k.as_str()) {
                MAX_WHOLE_LEN
            } else {
                MAX_FIELD_LEN
            };
            let v = cut_at(&v, max);
            (k, v)
        })
        .collect();
    let mut record = AuditRecord::new(seq, head.hash.clone(), time_ms, event, cut(actor), details);
    if let Some(sealer) = sealer {
        record.sign(sealer.key);
    }
    batch.put(
        Tree::Audit,
        seq.to_be_bytes().to_vec(),
        record.to_json_line().into_bytes(),
    );
    let new_head = AuditHead {
        seq,
        hash: record.hash_hex(),
    };
    if let Some(sealer) = sealer {
        let mut plain = seq.to_be_bytes().to_vec();
        plain.extend_from_slice(&record.hash());
        let sealed = sealer
            .ring
            .seal(Tree::Meta, ANCHOR_KEY, &plain, sealer.rng)?;
        batch.put(Tree::Meta, ANCHOR_KEY.to_vec(), sealed);
    }
    Ok(new_head)
}

/// The anchor (newest signed record), if the store has one.
pub(crate) fn read_anchor(
    storage: &dyn Storage,
    ring: &Keyring,
) -> Result<Option<AuditHead>, Error> {
    let Some(sealed) = storage.get(Tree::Meta, ANCHOR_KEY)? else {
        return Ok(None);
    };
    let plain = ring.open(Tree::Meta, ANCHOR_KEY, &sealed)?;
    let (seq, hash) = plain
        .split_first_chunk::<8>()
        .filter(|(_, hash)| hash.len() == 32)
        .ok_or_else(|| Error::Corruption("audit anchor has a wrong length".into()))?;
    Ok(Some(AuditHead {
        seq: u64::from_be_bytes(*seq),
        hash: hex::encode(hash),
    }))
}

/// The result of [`check_tail`] when storage could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The log continues the anchor (or, without one, verifies from seq 1).
    Verified {
        /// The stored head.
        head: AuditHead,
        /// Records read and checked.
        checked: u64,
        /// The store has no anchor yet (written before anchoring existed): create one.
        legacy: bool,
    },
    /// The log does not continue the anchor: `problem` says where (seqs, never content).
    Mismatch {
        /// The stored head, to continue from if the unseal goes ahead anyway.
        head: AuditHead,
        /// What was found.
        problem: String,
    },
}

/// Verifies the stored log from the anchor (or from seq 1 without one) to its last record:
/// the anchored record is there with the anchored hash, every later record links to its
/// predecessor without a gap, signatures verify, and only sealed-time events are unsigned.
pub(crate) fn check_tail(
    storage: &dyn Storage,
    anchor: Option<&AuditHead>,
    public_key: &[u8; 32],
) -> Result<Tail, Error> {
    let head = load_head(storage)?;
    let mismatch = |problem: String| Tail::Mismatch {
        head: head.clone(),
        problem,
    };
    let (mut next, mut prev) = match anchor {
        Some(a) => {
            if head.seq < a.seq {
                return Ok(mismatch(format!(
                    "the log ends at seq {} before the anchored seq {}",
                    head.seq, a.seq
                )));
            }
            match get(storage, a.seq)? {
                Some(r) if r.hash_hex() == a.hash => {}
                Some(_) => {
                    return Ok(mismatch(format!(
                        "record {} is not the anchored record",
                        a.seq
                    )))
                }
                None => {
                    return Ok(mismatch(format!(
                        "the anchored record {} is missing",
                        a.seq
                    )))
                }
            }
            (a.seq + 1, a.hash.clone())
        }
        None => (1, GENESIS_PREV_HASH.to_string()),
    };
    let mut checked = 0u64;
    while next <= head.seq {
        let page = read(storage, next, PAGE)?;
        let Some(last) = page.last() else {
            return Ok(mismatch(format!(
                "record {next} is missing (a gap before the head)"
            )));
        };
        if let Err(e) = vhsm_audit::verify_suffix(&page, public_key, next, &prev, None) {
            return Ok(mismatch(e.to_string()));
        }
        if anchor.is_none() {
            if let Some(r) = page.iter().find(|r| {
                r.event == ANCHOR_CREATED_EVENT
                    || (r.seq == 1 && r.details.contains_key(ANCHORED_DETAIL))
            }) {
                return Ok(mismatch(format!(
                    "the audit anchor is missing although record {} says the store keeps one",
                    r.seq
                )));
            }
        }
        checked += page.len() as u64;
        prev = last.hash_hex();
        next = last.seq + 1;
        if page.len() < PAGE && next <= head.seq {
            return Ok(mismatch(format!(
                "record {next} is missing (a gap before the head)"
            )));
        }
    }
    Ok(Tail::Verified {
        head,
        checked,
        legacy: anchor.is_none(),
    })
}

fn parse(seq: u64, value: &[u8]) -> Result<AuditRecord, Error> {
    let line = std::str::from_utf8(value)
        .map_err(|_| Error::Corruption(format!("audit record {seq}: not UTF-8")))?;
    let record = AuditRecord::from_json_line(line)
        .map_err(|_| Error::Corruption(format!("audit record {seq}: malformed")))?;
    if record.seq != seq {
        return Err(Error::Corruption(format!(
            "audit record {seq}: stored under another seq"
        )));
    }
    Ok(record)
}

/// Reads record `seq`, if present.
pub(crate) fn get(storage: &dyn Storage, seq: u64) -> Result<Option<AuditRecord>, Error> {
    storage
        .get(Tree::Audit, &seq.to_be_bytes())?
        .map(|v| parse(seq, &v))
        .transpose()
}

/// The newest record: the greatest stored seq, so a gap below it (a deleted record) is never
/// overwritten by the next append; [`check_tail`] and `audit verify` report the gap.
pub(crate) fn load_head(storage: &dyn Storage) -> Result<AuditHead, Error> {
    let Some(key) = storage.last_key(Tree::Audit)? else {
        return Ok(AuditHead::genesis());
    };
    let seq = <[u8; 8]>::try_from(key.as_slice())
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corruption("audit log has a malformed key".into()))?;
    let record =
        get(storage, seq)?.ok_or_else(|| Error::Corruption("audit head vanished".into()))?;
    Ok(AuditHead {
        seq,
        hash: record.hash_hex(),
    })
}

/// Records with `seq >= from_seq` (from 1), at most `limit`, in order.
pub(crate) fn read(
    storage: &dyn Storage,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<AuditRecord>, Error> {
    let mut out = Vec::new();
    let mut seq = from_seq.max(1);
    while out.len() < limit {
        match get(storage, seq)? {
            Some(r) => out.push(r),
            None => break,
        }
        seq += 1;
    }
    Ok(out)
}

/// Builds a details map from pairs.
pub(crate) fn details<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::env::OsRandom;
    use crate::storage::{Durability, MemoryStorage};

    struct Log {
        s: MemoryStorage,
        key: SigningKey,
        ring: Keyring,
        head: AuditHead,
    }

    impl Log {
        fn new() -> Log {
            let (ring, _) = Keyring::generate(&SecretKey::from_bytes([3; 32]), &OsRandom).unwrap();
            Log {
                s: MemoryStorage::new(),
                key: SigningKey::from_bytes(&[7; 32]),
                ring,
                head: AuditHead::genesis(),
            }
        }
        fn push(&mut self, event: &str, signed: bool) {
            let sealer = Sealer {
                key: &self.key,
                ring: &self.ring,
                rng: &OsRandom,
            };
            let mut b = WriteBatch::new();
            let seq = self.head.seq;
            self.head = append(
                &mut b,
                &self.head,
                seq,
                event,
                "tester",
                details([("i", seq.to_string())]),
                signed.then_some(&sealer),
            )
            .unwrap();
            self.s.commit(b, Durability::Flushed).unwrap();
        }
        fn anchor(&self) -> Option<AuditHead> {
            read_anchor(&self.s, &self.ring).unwrap()
        }
        fn tail(&self) -> Tail {
            let pk = self.key.verifying_key().to_bytes();
            check_tail(&self.s, self.anchor().as_ref(), &pk).unwrap()
        }
        fn problem(&self) -> String {
            match self.tail() {
                Tail::Mismatch { problem, .. } => problem,
                v => panic!("expected a mismatch, got {v:?}"),
            }
        }
        /// A forged unsigned record appended after the stored head.
        fn forge(&mut self, event: &str) {
            let seq = self.head.seq + 1;
            let r = AuditRecord::new(seq, self.head.hash.clone(), 1, event, "x", BTreeMap::new());
            self.s
                .raw_put(Tree::Audit, &seq.to_be_bytes(), r.to_json_line().as_bytes());
            self.head = AuditHead {
                seq,
                hash: r.hash_hex(),
            };
        }
    }

    /// Signed records, then sealed-time (unsigned) ones.
    fn log() -> Log {
        let mut l = Log::new();
        for i in 0..12 {
            let sealed_time = i % 4 == 3;
            let event = if sealed_time {
                "access.denied"
            } else {
                "key.create"
            };
            l.push(event, !sealed_time);
        }
        for _ in 0..3 {
            l.push("unseal.rejected", false);
        }
        l
    }

    #[test]
    fn append_load_head_and_verify() {
        let mut l = Log::new();
        assert_eq!(load_head(&l.s).unwrap(), AuditHead::genesis());
        for i in 0..37u64 {
            l.push("test", i % 3 == 0);
            assert_eq!(load_head(&l.s).unwrap(), l.head);
        }
        let all = read(&l.s, 0, 1000).unwrap();
        assert_eq!(all.len(), 37);
        // The anchor is the newest signed record (36 = seq 37 - 1, i = 36 is signed).
        assert_eq!(l.anchor().unwrap(), l.head);
        l.push("unseal.rejected", false);
        assert_eq!(l.anchor().unwrap().seq, 37);
        let v = vhsm_audit::verify_chain(
            &read(&l.s, 0, 1000).unwrap(),
            &l.key.verifying_key().to_bytes(),
            Some((l.head.seq, &l.head.hash)),
        );
        // Records 2, 3, 5, ... are unsigned "test" events: only sealed-time events may be.
        assert!(matches!(
            v,
            Err(vhsm_audit::VerifyError::UnsignedEvent { seq: 2, .. })
        ));
        assert_eq!(
            read(&l.s, 30, 3)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            vec![30, 31, 32]
        );
        assert!(read(&l.s, 39, 10).unwrap().is_empty());
    }

    #[test]
    fn a_gap_is_never_overwritten() {
        let mut l = log();
        l.s.raw_delete(Tree::Audit, &5u64.to_be_bytes());
        assert_eq!(load_head(&l.s).unwrap().seq, 15);
        l.push("key.rotate", true);
        assert_eq!(l.head.seq, 16);
        assert!(get(&l.s, 6).unwrap().is_some());
    }

    #[test]
    fn an_intact_tail_verifies_from_the_anchor() {
        let l = log();
        assert_eq!(l.anchor().unwrap().seq, 11);
        assert_eq!(
            l.tail(),
            Tail::Verified {
                head: l.head.clone(),
                checked: 4,
                legacy: false
            }
        );
    }

    #[test]
    fn a_log_without_anchor_verifies_from_genesis_as_legacy() {
        let l = log();
        l.s.raw_delete(Tree::Meta, ANCHOR_KEY);
        assert_eq!(
            l.tail(),
            Tail::Verified {
                head: l.head.clone(),
                checked: 15,
                legacy: true
            }
        );
        // Without an anchor, an unsigned unsealed-only event is still refused.
        let mut l = log();
        l.forge("key.create");
        l.s.raw_delete(Tree::Meta, ANCHOR_KEY);
        assert!(l.problem().contains("must be signed"));
    }

    #[test]
    fn tampering_with_the_tail_is_found() {
        // Cut below the anchor.
        let l = log();
        for seq in 10..=15u64 {
            l.s.raw_delete(Tree::Audit, &seq.to_be_bytes());
        }
        assert!(
            l.problem().contains("before the anchored seq 11"),
            "{}",
            l.problem()
        );
        // Cut below the anchor and refill with unsigned sealed-time forgeries up to past it.
        let mut l = log();
        for seq in 8..=15u64 {
            l.s.raw_delete(Tree::Audit, &seq.to_be_bytes());
        }
        l.head = load_head(&l.s).unwrap();
        for _ in 0..6 {
            l.forge("unseal.rejected");
        }
        assert!(
            l.problem().contains("not the anchored record"),
            "{}",
            l.problem()
        );
        // An unsigned forgery of an unsealed-only event after the anchor.
        let mut l = log();
        l.forge("key.destroy");
        assert!(l.problem().contains("must be signed"), "{}", l.problem());
        // A deleted record after the anchor: a gap.
        let mut l = log();
        l.forge("unseal.rejected");
        l.s.raw_delete(Tree::Audit, &13u64.to_be_bytes());
        assert!(l.problem().contains("13 is missing"), "{}", l.problem());
        // An edited sealed-time record: the next link breaks.
        let l = log();
        let mut r = get(&l.s, 13).unwrap().unwrap();
        r.actor = "mallory".into();
        l.s.raw_put(
            Tree::Audit,
            &13u64.to_be_bytes(),
            r.to_json_line().as_bytes(),
        );
        assert!(l.problem().contains("seq 14"), "{}", l.problem());
        // The anchor removed from a store that keeps one (record 1 says so).
        let mut l = Log::new();
        let mut b = WriteBatch::new();
        let sealer = Sealer {
            key: &l.key,
            ring: &l.ring,
            rng: &OsRandom,
        };
        l.head = append(
            &mut b,
            &l.head,
            1,
            "init",
            "admin",
            details([(ANCHORED_DETAIL, "1".to_string())]),
            Some(&sealer),
        )
        .unwrap();
        l.s.commit(b, Durability::Flushed).unwrap();
        l.s.raw_delete(Tree::Meta, ANCHOR_KEY);
        assert!(l.problem().contains("anchor is missing"), "{}", l.problem());
    }

    #[test]
    fn a_swapped_anchor_from_another_store_does_not_open() {
        let l = log();
        let other = log();
        let foreign = other.s.get(Tree::Meta, ANCHOR_KEY).unwrap().unwrap();
        l.s.raw_put(Tree::Meta, ANCHOR_KEY, &foreign);
        // Same root in this fixture: the keyring opens it, but a truncated value does not.
        l.s.raw_put(Tree::Meta, ANCHOR_KEY, &foreign[..foreign.len() - 1]);
        assert!(read_anchor(&l.s, &l.ring).is_err());
    }

    #[test]
    fn long_fields_are_cut_and_bad_records_are_corruption() {
        let s = MemoryStorage::new();
        let mut b = WriteBatch::new();
        append(
            &mut b,
            &AuditHead::genesis(),
            1,
            "e",
            &"é".repeat(300),
            details([("d", "x".repeat(1000))]),
            None,
        )
        .unwrap();
        s.commit(b, Durability::Flushed).unwrap();
        let r = get(&s, 1).unwrap().unwrap();
        assert!(r.actor.len() <= MAX_FIELD_LEN && r.details["d"].len() == MAX_FIELD_LEN);
        s.raw_put(Tree::Audit, &2u64.to_be_bytes(), b"not json");
        assert!(matches!(get(&s, 2), Err(Error::Corruption(_))));
        let line = r.to_json_line();
        s.raw_put(Tree::Audit, &3u64.to_be_bytes(), line.as_bytes());
        assert!(matches!(get(&s, 3), Err(Error::Corruption(_))));
        s.raw_put(Tree::Audit, b"short", line.as_bytes());
        assert!(matches!(load_head(&s), Err(Error::Corruption(_))));
    }
}
