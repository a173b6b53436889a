#!/usr/bin/env python3
"""Writes the hand-made seeds of the fuzz targets into corpus/<target>/seed-*.

Run from fuzz/: `python3 seeds/make-seeds.py`. It needs `age` (the backup seeds are real age
files) and the `cryptography` module (the audit seeds carry real Ed25519 signatures). The seeds
are valid inputs of each parser; the fuzzers take it from there. Targets whose inputs are only
structured (arbitrary) get their corpus from fuzzing alone.
"""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import struct
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECIPIENT = "age1h2dhxz8hztqv5w7dml00kf0t46hfzxrd3tuy697w6e4mrngngskq3g68x0"
FP = "ab" * 32


def seed(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def raw(target, name, data):
    """A seed in a target's raw mode (a leading NUL byte)."""
    if isinstance(data, str):
        data = data.encode()
    seed(target, name, b"\0" + data)


def read(name):
    with open(os.path.join(HERE, name), "rb") as f:
        return f.read()


# names: one string, every parser.
for i, s in enumerate([
    "db/master-key", "acme", "Acme-1.x_y", "a/b/c.d_e-f", "group:kms", FP, " " + FP + " ",
    "group:acme/kms", "7", "9223372036854775807", 'W/"3-ab", "x"', "*",
    "2025-11-24T16:00:00.123Z", "web-01.example.com",
]):
    seed("names", str(i), s)

# api_json: the first byte picks the type (see the target), the rest is the body.
for which, body in [
    (0, {"org": "acme", "auth_secret": "s3cret-s3cret-s3cret", "name": "web-01", "recipient": RECIPIENT}),
    (1, {"name": "acme", "contacts": ["ops@example.com"]}),
    (2, {"mode": "secret", "secret": "0123456789abcdef"}),
    (3, {"change": {"op": "grant", "grantee": "group:kms", "access": "read"}, "expected_version": 2,
         "expected_acl_serial": 1, "versions": [{"version": 1, "payload": "YWdl"}]}),
    (4, {"org": "acme", "name": "kms", "recipient": RECIPIENT, "members": [{"fingerprint": FP, "wrapped": "YWdl"}]}),
    (5, {"member": FP, "keys": [{"epoch": 1, "wrapped": "YWdl"}]}),
    (6, {"member": FP}),
    (7, {"member": FP, "expected_epoch": 1, "recipient": RECIPIENT, "keys": []}),
    (8, {"ttl_seconds": 3600}),
    (9, {"older_than_seconds": 86400}),
    (10, {"passphrase": "correct horse battery staple"}),
    (11, {"version": 1}),
    (12, {"recipients": [RECIPIENT], "include_root_key": False}),
    (13, {"prefix": "db/", "limit": 10, "deleted": True, "owner": "group:kms"}),
    (15, {"status": "ok", "version": "0.1.0", "fingerprint": FP, "checks": {"database": "ok"}, "seal": "file"}),
    (16, {"fingerprint": FP, "org": "acme", "name": "web", "state": "active", "role": "client",
          "token_counter": 3, "created_at": "2025-11-24T16:00:00.123Z", "updated_at": "2025-11-24T16:00:00.123Z"}),
    (34, {"error": {"code": "not_found", "message": "no such deposit", "request_id": "abc"}}),
    (38, "2025-11-24T16:00:00.123Z"),
    (39, {"kind": "deposit_versions", "count": 3}),
]:
    seed("api_json", str(which), bytes([which]) + json.dumps(body).encode())

# audit: a page of three entries and a checkpoint, signed with the target's key (seed 7 * 32).
def canonical(seq, prev, e):
    d = dict(e, seq=seq, prev_hash=prev)
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

def audit_seed():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    key = Ed25519PrivateKey.from_private_bytes(bytes([7] * 32))
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = hashlib.sha256(pub).hexdigest()
    prev, entries = "0" * 64, []
    for seq in range(1, 4):
        e = {"time": 1700000000000 + seq, "node": "n1", "request_id": "r%d" % seq,
             "remote": "127.0.0.1:5", "client": FP, "org": "acme",
             "operation": "GET /v1/deposits/{*path}", "target": "/v1/deposits/db/key",
             "version": seq, "outcome": "ok"}
        h = hashlib.sha256(b"keysafe-audit-entry-v1\n" + canonical(seq, prev, e)).hexdigest()
        entries.append(dict(e, seq=seq, prev_hash=prev, hash=h))
        prev = h
    msg = b"keysafe-audit-checkpoint-v1\n" + json.dumps(
        {"hash": prev, "key_id": kid, "seq": 3, "signed_at": 1700000000100},
        sort_keys=True, separators=(",", ":")).encode()
    cp = {"seq": 3, "hash": prev, "signed_at": 1700000000100, "key_id": kid,
          "signature": key.sign(msg).hex()}
    return json.dumps({"entries": entries}) + "\n\n" + json.dumps({"checkpoints": [cp]})

raw("audit", "page", audit_seed())

# kms_token: the token captured from Hadoop in the gateway's spec (§2.2).
raw("kms_token", "captured",
    "HAAEcm9vdAR5YXJuAIoBoiB4rH2KAaJEhTB9AQEU3I-1HIayu5Bm0Y-9dnscvgbK74oGa21zLWR0HmttczovL2h0dHBAMTI3LjAuMC4xOjE2MDAwL2ttcw")

# kms_cookie: a Cookie header with a cookie signed with the target's secret (0x42 * 32).
payload = "u=alice&p=alice&t=simple-dt&e=%d" % (int(time.time() * 1000) + 10 * 365 * 86400000)
sig = base64.b64encode(hmac.new(bytes([0x42] * 32), payload.encode(), hashlib.sha256).digest()).decode()
raw("kms_cookie", "signed", 'JSESSIONID=1; hadoop.auth="%s&s=%s"' % (payload, sig))

# kms_names: rules on the first line, principals after.
raw("kms_names", "rules",
    "RULE:[2:$1@$0](nn@EXAMPLE\\.COM)s/.*/hdfs/ RULE:[1:$1@$0](.*@EXAMPLE\\.COM)s/@.*//L DEFAULT\n"
    "nn/host.example.com@EXAMPLE.COM\nAlice@EXAMPLE.COM\nbob/admin@OTHER.ORG\nplain")

# kms_acl: an HDFS-style kms-acls.xml.
raw("kms_acl", "hdfs", """<?xml version="1.0"?>
<configuration>
  <property><name>hadoop.kms.acl.CREATE</name><value>keyadmin</value></property>
  <property><name>hadoop.kms.acl.GENERATE_EEK</name><value>hdfs supergroup</value></property>
  <property><name>hadoop.kms.acl.DECRYPT_EEK</name><value>*</value></property>
  <property><name>hadoop.kms.blacklist.DECRYPT_EEK</name><value>hdfs</value></property>
  <property><name>key.acl.k1.READ</name><value>alice</value></property>
  <property><name>default.key.acl.MANAGEMENT</name><value>keyadmin</value></property>
  <property><name>whitelist.key.acl.DECRYPT_EEK</name><value> admins</value></property>
</configuration>
""")

# Certificates: one made by openssl with a CN and DNS, e-mail, URI and IP alternative names.
der = read("c.der")
raw("kms_certauth", "openssl", der)
raw("certificate", "openssl", der)

# kms_config: the documented Kerberos and certificate examples (docs/kms.md), and the empty file.
seed("kms_config", "empty", "")
seed("kms_config", "kerberos", """listen = "10.0.0.1:9600"
key_admins = "keyadmin"
acl_file = "kms-acls.xml"
[auth]
type = "kerberos"
principal = "HTTP/kms-1.example.com@EXAMPLE.COM"
keytab = "/etc/keysafe/kms.keytab"
token_validity = "10h"
name_rules = '''
RULE:[2:$1@$0](nn@EXAMPLE\\.COM)s/.*/hdfs/
DEFAULT
'''
[delegation_token]
renew_interval = "1day"
max_lifetime = "7days"
[tls]
cert = "kms.crt"
key = "kms.key"
[keysafe]
group_recipient = "%s"
""" % RECIPIENT)
seed("kms_config", "certificate", """[tls]
cert = "kms.crt"
key = "kms.key"
[auth]
type = "certificate"
client_ca = "clients-ca.pem"
[[auth.certificate_rules]]
field = "san.email"
pattern = '([a-z][a-z0-9_-]*)@hadoop\\.example\\.com'
user = "$1"
[proxyuser.hue]
users = "*"
hosts = "10.0.0.0/8"
""")

# server_config: the documented template (`keysafe serve --print-default-config`).
raw("server_config", "template", read("keysafe.toml"))

# backup: a well-formed container, as is and encrypted to the target's recipient.
files = [("keysafe.db", b"SQLite format 3\0"), ("keysafe.toml", b"[server]\n"),
         ("tls/server.crt", b"-----BEGIN CERTIFICATE-----\n")]
manifest = {"format": 1, "created_at": "2025-11-24T16:00:00.123Z", "keysafe_version": "0.1.0",
            "server_fingerprint": FP, "seal": "file", "includes_root_key": False,
            "files": [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files]}
header = json.dumps(manifest).encode()
container = b"KEYSAFE-BACKUP 1\n" + struct.pack(">I", len(header)) + header + b"".join(b for _, b in files)
seed("backup", "container", b"\x01" + container)
encrypted = subprocess.run(["age", "-r", RECIPIENT], input=container, capture_output=True, check=True).stdout
raw("backup", "age", encrypted)

# client_files: client.toml, a cache entry, a token file.
raw("client_files", "client-toml", """servers = ["https://ks1.example.com:11371", "https://ks2.example.com:11371/"]
server_fingerprint = "%s"
org = "acme"
fingerprint = "%s"
name = "web-01"

[server_fingerprints]
"https://ks2.example.com:11371" = "%s"

[cache]
enabled = true
mode = "ttl"
ttl = "10m"
max_stale = "1day"
""" % (FP, "cd" * 32, "ef" * 32))
meta = {"format": 2, "scope": "0" * 32, "owner": FP, "name": "db/key", "version": 3,
        "encoding": "age", "etag": "3-ab", "fetched_at": 1700000000, "size": 4}
seed("client_files", "entry", b"\x01" + json.dumps(meta).encode() + b"\npay!")
seed("client_files", "token", b"\x0212.c2VjcmV0LXNlY3JldC1zZWNyZXQ\n")
