#!/usr/bin/env python3
"""Writes the text seed corpus of fuzz/ (run from anywhere: python3 fuzz/seeds/make_text_seeds.py).

The binary seeds (share, header, envelope, key_record, backup) come from vhsm-core's own
encoders: FUZZ_SEEDS_OUT=$PWD/fuzz/corpus cargo test -p vhsm-core --features fuzzing fuzz_api
"""
import hashlib
import hmac
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
FUZZ = HERE.parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"
FIX = "/tmp/vhsm-fuzz"  # vhsm_fuzz::fixture_dir()


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


META = {
    "awsPrincipalArn": "arn:aws:iam::111122223333:role/app",
    "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/abc",
    "kmsOperation": "Encrypt",
    "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
    "awsSourceVpce": "vpce-0123456789abcdef0",
}


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def xks_request():
    health = {"requestMetadata": {"kmsRequestId": "r1", "kmsOperation": "CreateCustomKeyStore"}}
    write("xks_request", "health", "/kms/xks/v1/health\n" + compact(health))
    write("xks_request", "metadata", "/kms/xks/v1/keys/k1/metadata\n" + compact({"requestMetadata": META}))
    enc = {
        "requestMetadata": META,
        "plaintext": "SGVsbG8gV29ybGQh",
        "encryptionAlgorithm": "AES_GCM",
        "additionalAuthenticatedData": "cHJvamVjdD1uaW1idXM=",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
    }
    write("xks_request", "encrypt", "/kms/xks/v1/keys/k1/encrypt\n" + compact(enc))
    dec = {
        "requestMetadata": META,
        "ciphertext": "0aRqlSiCvaEMtAzmXcpHm4FlpQ==",
        "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==",
        "encryptionAlgorithm": "AES_GCM",
        "additionalAuthenticatedData": "cHJvamVjdD1uaW1idXM=",
        "initializationVector": "HMd5ed+AnKP4bzQK",
        "authenticationTag": "vr3EJ7bfMy47MUaXzXIzpA==",
    }
    write("xks_request", "decrypt", "/kms/xks/v1/keys/k1/decrypt\n" + compact(dec))


def sigv4_request(method, uri, host, extra, body, signed, add_sha=False, query=""):
    secret = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz"
    date, stamp = "20240101", "20240101T000000Z"
    payload = hashlib.sha256(body.encode()).hexdigest()
    headers = dict(extra)
    if host is not None:
        headers["host"] = host
    headers["x-amz-date"] = stamp
    if add_sha:
        headers["x-amz-content-sha256"] = payload
    path = uri.split("?")[0]
    if path.startswith("https://"):
        path = "/" + path.split("/", 3)[3]
    names = sorted(signed)
    canon = "\n".join([
        method, path, query,
        *[f"{n}:{headers[n] if n in headers else host_of(uri)}" for n in names],
        "", ";".join(names), payload,
    ])
    scope = f"{date}/us-east-1/kms-xks-proxy/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canon.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (date, "us-east-1", "kms-xks-proxy", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential=AKIAFUZZFUZZFUZZFUZZ/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={sig}"
    )
    lines = [method, uri] + [f"{k}: {v}" for k, v in headers.items()] + ["", body]
    return "\n".join(lines)


def host_of(uri):
    return uri.split("/")[2]


def sigv4():
    body = compact({"requestMetadata": META, "plaintext": "SGVsbG8="})
    write("sigv4", "signed-encrypt", sigv4_request(
        "POST", "/kms/xks/v1/keys/k1/encrypt", "xks.example.com",
        {"content-type": "application/json"}, body, ["host", "x-amz-date"]))
    write("sigv4", "signed-sha-and-type", sigv4_request(
        "POST", "/p/kms/xks/v1/health", "xks.example.com:443",
        {"content-type": "application/json"}, "{}",
        ["content-type", "host", "x-amz-content-sha256", "x-amz-date"], add_sha=True))
    write("sigv4", "signed-h2-authority", sigv4_request(
        "POST", "https://xks.example.com/kms/xks/v1/health", None, {}, "{}", ["host", "x-amz-date"]))
    write("sigv4", "signed-query", sigv4_request(
        "GET", "/kms/xks/v1/health?b=2&a=%20x+y", "h", {}, "", ["host", "x-amz-date"],
        query="a=%20x%20y&b=2"))


def keystores():
    text = (ROOT / "deploy" / "keystores.example.toml").read_text()
    text = text.replace("/etc/xks-front/secrets/default-1", "secret")
    text = text.replace("/etc/xks-front/secrets/default-2", f"{FIX}/secret")
    write("keystores_toml", "example", text)
    write("keystores_toml", "two-stores", """[[keystore]]
name = "a"
path_prefix = ""
keys = ["*"]
rate_limit_per_sec = 10
burst = 10
[[keystore.credential]]
access_key_id = "AKIAFUZZFUZZFUZZFUZZ"
secret_file = "secret"

[[keystore]]
name = "b.2"
path_prefix = "/tenant/b"
keys = ["k1", "k-2.x"]
rate_limit_per_sec = 1
burst = 1
[[keystore.credential]]
access_key_id = "AKIAFUZZFUZZFUZZFUZ2"
secret_file = "bad-secret"
""")


def configs():
    xks = (ROOT / "deploy" / "xks-front.example.toml").read_text()
    xks = xks.replace("/etc/xks-front/pki/", f"{FIX}/pki/").replace("/etc/xks-front/", f"{FIX}/")
    write("config_toml", "xks-front-example", b"\x00" + xks.encode())
    write("config_toml", "xks-front-minimal", b"\x00" + f"""keystores_file = "{FIX}/keystores.toml"
region = "us-east-1"
[listen]
addr = "127.0.0.1:8443"
plain_http = true
[vhsm]
ca = "{FIX}/pki/ca.crt"
client_cert = "{FIX}/pki/server.crt"
client_key = "{FIX}/pki/server.key"
[[vhsm.nodes]]
id = "n1"
endpoint = "unix:/tmp/vhsm-fuzz/vhsmd.sock"
""".encode())
    vhsmd = (ROOT / "deploy" / "vhsmd.example.toml").read_text()
    vhsmd = (vhsmd.replace("/etc/vhsm/pki/vhsmd.crt", f"{FIX}/pki/server.crt")
             .replace("/etc/vhsm/pki/vhsmd.key", f"{FIX}/pki/server.key")
             .replace("/etc/vhsm/pki/ca.crt", f"{FIX}/pki/ca.crt")
             .replace('# path = "/run/vhsm/vhsmd.sock"', f'path = "{FIX}/vhsmd.sock"'))
    write("config_toml", "vhsmd-example", b"\x01" + vhsmd.encode())


def audit():
    prev = "0" * 64
    lines = []
    events = [("init", "admin", {"mode": "passphrase"}), ("unseal.success", "admin", {}),
              ("key.create", "admin", {"key_id": "k1", "usage": "ENCRYPT_DECRYPT"})]
    for seq, (event, actor, details) in enumerate(events, start=1):
        rec = {"seq": seq, "time_ms": 1_700_000_000_000 + seq, "event": event, "actor": actor,
               "details": dict(sorted(details.items())), "prev_hash": prev}
        canon = b"vhsm-audit-v1\n" + compact(rec).encode()
        prev = hashlib.sha256(canon).hexdigest()
        lines.append(compact(rec))
    write("audit_line", "chain-3-unsigned", "\n".join(lines) + "\n")
    signed = json.loads(lines[0])
    signed["signature"] = "ab" * 64
    write("audit_line", "bad-signature", compact(signed) + "\n")
    write("audit_line", "escapes", compact({"seq": 1, "time_ms": 0, "event": "e\u00e9\n", "actor": "a\"b",
                                            "details": {"k": "v\\u0000"}, "prev_hash": "0" * 64}) + "\n")


def passphrase():
    # Byte 0: reads to make, two bits each (0 existing, 1 new, 2 new custodian, 3 stop).
    write("passphrase_fd", "unseal-one", b"\xfc" + b"correct horse battery\n")
    write("passphrase_fd", "init-confirmed", b"\xf1" + b"twelve chars ok!\r\ntwelve chars ok!\r\n")
    write("passphrase_fd", "custodians", b"\xaa" + b"custodian one pass\ncustodian two pass\ncustodian 3 passphrase\nlast")
    write("passphrase_fd", "too-long", b"\x00" + b"x" * 1030 + b"\nnext\n")


xks_request()
sigv4()
keystores()
configs()
audit()
passphrase()
