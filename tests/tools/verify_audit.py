#!/usr/bin/env python3
"""An independent verifier of vhsm audit logs (JSON lines), written from docs/core-design.md
("Audit chain") and vhsm/audit's documented format, not from its code: it exists so the Rust
verifier is tested against a second implementation.

Usage: verify_audit.py LOG PUBKEY_HEX_FILE
Prints "OK <records> <signed> <head_seq> <head_hash>" and exits 0, or prints
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
        prev = hashlib.sha256(data).hexdigest()
        head = seq
        expected += 1
    if head is None:
        return "FAIL seq 1: empty log"
    return f"OK {head} {signed} {head} {prev}"


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
