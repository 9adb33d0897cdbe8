//! The stored audit log: tree `Audit`, key = seq (u64be), value = one `vhsm_audit` JSON line.
//!
//! Records are chained by `prev_hash` from seq 1 and signed with the appliance Ed25519 key
//! when it is in memory (unsealed); records written while sealed are chained but unsigned.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use vhsm_audit::{AuditRecord, GENESIS_PREV_HASH};

use crate::error::Error;
use crate::storage::{Storage, Tree, WriteBatch};

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

fn cut(s: &str) -> String {
    if s.len() <= MAX_FIELD_LEN {
        return s.to_string();
    }
    let mut end = MAX_FIELD_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Builds the next record after `head`, signs it if a key is given and queues it in `batch`.
/// Returns the new head; apply it only after the batch committed.
pub(crate) fn append(
    batch: &mut WriteBatch,
    head: &AuditHead,
    time_ms: u64,
    event: &str,
    actor: &str,
    details: BTreeMap<String, String>,
    signer: Option<&SigningKey>,
) -> AuditHead {
    let seq = head.seq + 1;
    let details = details.into_iter().map(|(k, v)| (k, cut(&v))).collect();
    let mut record = AuditRecord::new(seq, head.hash.clone(), time_ms, event, cut(actor), details);
    if let Some(key) = signer {
        record.sign(key);
    }
    batch.put(
        Tree::Audit,
        seq.to_be_bytes().to_vec(),
        record.to_json_line().into_bytes(),
    );
    AuditHead {
        seq,
        hash: record.hash_hex(),
    }
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

fn exists(storage: &dyn Storage, seq: u64) -> Result<bool, Error> {
    Ok(storage.get(Tree::Audit, &seq.to_be_bytes())?.is_some())
}

/// Finds the newest record (seqs are contiguous from 1) with O(log n) reads; only the head
/// record itself is parsed.
pub(crate) fn load_head(storage: &dyn Storage) -> Result<AuditHead, Error> {
    if !exists(storage, 1)? {
        return Ok(AuditHead::genesis());
    }
    // Invariant of the search: `lo` exists, `hi` does not.
    let mut lo = 1u64;
    let mut hi = 2u64;
    while exists(storage, hi)? {
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if exists(storage, mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let record =
        get(storage, lo)?.ok_or_else(|| Error::Corruption("audit head vanished".into()))?;
    Ok(AuditHead {
        seq: lo,
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
    use crate::storage::{Durability, MemoryStorage};

    #[test]
    fn append_load_head_and_verify() {
        let s = MemoryStorage::new();
        assert_eq!(load_head(&s).unwrap(), AuditHead::genesis());
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut head = AuditHead::genesis();
        for i in 0..37u64 {
            let mut b = WriteBatch::new();
            let signer = (i % 3 == 0).then_some(&key);
            head = append(
                &mut b,
                &head,
                i,
                "test",
                "tester",
                details([("i", i.to_string())]),
                signer,
            );
            s.commit(b, Durability::Flushed).unwrap();
            assert_eq!(load_head(&s).unwrap(), head);
        }
        let all = read(&s, 0, 1000).unwrap();
        assert_eq!(all.len(), 37);
        let v = vhsm_audit::verify_chain(
            &all,
            &key.verifying_key().to_bytes(),
            Some((head.seq, &head.hash)),
        )
        .unwrap();
        assert_eq!(v.head_seq, 37);
        assert_eq!(
            read(&s, 30, 3)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            vec![30, 31, 32]
        );
        assert!(read(&s, 38, 10).unwrap().is_empty());
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
        );
        s.commit(b, Durability::Flushed).unwrap();
        let r = get(&s, 1).unwrap().unwrap();
        assert!(r.actor.len() <= MAX_FIELD_LEN && r.details["d"].len() == MAX_FIELD_LEN);
        s.raw_put(Tree::Audit, &2u64.to_be_bytes(), b"not json");
        assert!(matches!(get(&s, 2), Err(Error::Corruption(_))));
        let line = r.to_json_line();
        s.raw_put(Tree::Audit, &3u64.to_be_bytes(), line.as_bytes());
        assert!(matches!(get(&s, 3), Err(Error::Corruption(_))));
    }
}
