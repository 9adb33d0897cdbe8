#!/usr/bin/env python3
"""An independent verifier of vhsm audit logs (JSON lines), written from docs/core-design.md
("Audit chain") and vhsm/audit's documented format, not from its code: it exists so the Rust
verifier is tested against a second implementation.

Quorum approvals are checked from docs/runbook-approvals.md ("Audit") and docs/admin-cli.md
(the signed message): every approver signature must verify over the statement it names, with the
key the latest approval.policy_set registered; every execution must name at least its threshold
of approvals present in the log.

Usage: verify_audit.py LOG PUBKEY_HEX_FILE
Prints "OK <records> <signed> <approvals> <head_seq> <head_hash>" and exits 0, or prints
"FAIL seq <n>: <why>" and exits 1.
"""
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PREFIX = b"vhsm-audit-v1\n"
GENESIS = "0" * 64
# Events a sealed node writes (no signing key in memory); every other event must be signed.
UNSIGNED_EVENTS = {
    "unseal.rejected",
    "unseal.share_accepted",
    "unseal.reset",
    "access.denied",
    "selftest.failed",
}
FIELDS = ["seq", "time_ms", "event", "actor", "details", "prev_hash", "signature"]
APPROVAL_PREFIX = b"vhsm-approval-v1\n"


class Approvals:
    """The approval facts of a log, checked record by record."""

    def __init__(self):
        self.approvers = None  # name -> hex public key, from the latest policy
        self.proposals = {}  # id -> (threshold, names that approved)
        self.checked = 0

    def check(self, rec):
        """None if the record's approval facts hold, else why not."""
        d = rec["details"]
        event = rec["event"]
        try:
            if event == "approval.policy_set":
                self.approvers = json.loads(d["policy"]).get("approvers", {})
            elif event == "approval.proposed":
                statement = json.loads(d["statement"])
                self.proposals[statement["proposal_id"]] = (int(d["threshold"]), set())
            elif event in ("approval.approved", "approval.rejected"):
                return self._decision(event, d)
            elif event == "approval.executed":
                return self._execution(d)
        except (KeyError, ValueError, TypeError):
            return "unreadable approval record"
        return None

    def _decision(self, event, d):
        text = d["statement"]
        statement = json.loads(text)
        if statement["proposal_id"] != d["proposal_id"]:
            return "signed statement is for another proposal"
        approver, key = d["approver"], d["approver_key"]
        if self.approvers is not None and self.approvers.get(approver) != key:
            return "approver key is not the one the policy registered"
        decision = b"approve" if event == "approval.approved" else b"reject"
        message = APPROVAL_PREFIX + decision + b"\n" + text.encode("utf-8")
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(key)).verify(
                bytes.fromhex(d["signature"]), message
            )
        except (InvalidSignature, ValueError):
            return "approver signature does not verify"
        if decision == b"approve" and statement["proposal_id"] in self.proposals:
            self.proposals[statement["proposal_id"]][1].add(approver)
        self.checked += 1
        return None

    def _execution(self, d):
        known = self.proposals.get(d["proposal_id"])
        if known is None:
            return None
        threshold, seen = known
        named = {n for n in d.get("approvers", "").split(",") if n}
        if len(named) < threshold:
            return "executed with fewer approvals than its threshold"
        if not named <= seen:
            return "executed naming an approval that is not in the log"
        return None


def canonical(rec):
    # Compact JSON of the signed fields in their fixed order, details keys sorted.
    body = {
        "seq": rec["seq"],
        "time_ms": rec["time_ms"],
        "event": rec["event"],
        "actor": rec["actor"],
        "details": dict(sorted(rec["details"].items())),
        "prev_hash": rec["prev_hash"],
    }
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return PREFIX + text.encode("utf-8")


def verify(lines, key):
    prev = GENESIS
    signed = 0
    expected = 1
    head = None
    approvals = Approvals()
    for line in lines:
        if not line.strip():
            continue
        rec = json.loads(line)
        if set(rec) - set(FIELDS) or not set(FIELDS[:-1]) <= set(rec):
            return f"FAIL seq {expected}: unexpected or missing fields"
        seq = rec["seq"]
        if seq != expected:
            return f"FAIL seq {expected}: found seq {seq}"
        if rec["prev_hash"] != prev:
            return f"FAIL seq {seq}: previous-hash link broken"
        data = canonical(rec)
        sig = rec.get("signature")
        if sig is None:
            if rec["event"] not in UNSIGNED_EVENTS:
                return f"FAIL seq {seq}: unsigned {rec['event']}"
        else:
            try:
                key.verify(bytes.fromhex(sig), data)
            except (InvalidSignature, ValueError):
                return f"FAIL seq {seq}: bad signature"
            signed += 1
        why = approvals.check(rec)
        if why is not None:
            return f"FAIL seq {seq}: {why}"
        prev = hashlib.sha256(data).hexdigest()
        head = seq
        expected += 1
    if head is None:
        return "FAIL seq 1: empty log"
    return f"OK {head} {signed} {approvals.checked} {head} {prev}"


def main():
    log, pub = sys.argv[1], sys.argv[2]
    with open(pub, encoding="ascii") as f:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(f.read().strip()))
    with open(log, encoding="utf-8") as f:
        verdict = verify(f.read().split("\n"), key)
    print(verdict)
    sys.exit(0 if verdict.startswith("OK") else 1)


if __name__ == "__main__":
    main()
