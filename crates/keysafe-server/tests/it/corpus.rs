//! A generated corpus of bad requests (malformed names, queries, headers, methods and bodies,
//! and garbage at the HTTP/1, HTTP/2 and TLS layers) against the real server. Every request the
//! HTTP layer can parse gets a 4xx answer with a JSON error carrying a stable code whose status
//! is the answer's; framing garbage gets a clean close (at most a bare 4xx from the HTTP layer
//! or a TLS alert first); nothing gets a 5xx or hangs, and afterwards the server serves a normal
//! client as before.

use crate::raw::{Raw, exchange, parse_answer, read_to_close};
use keysafe_client::ClientHome;
use keysafe_proto::{ErrorBody, ErrorCode};
use keysafe_testkit::TestServer;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Who sends a case.
#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    Client,
    Admin,
}

#[derive(Debug)]
enum Expect {
    /// An HTTP request: a 4xx with a JSON error.
    JsonError,
    /// Garbage below HTTP semantics: closed, at most after a bare 4xx or a TLS alert.
    Close,
}

struct Case {
    label: String,
    who: Who,
    /// `None`: plain TCP, no TLS at all.
    alpn: Option<Vec<Vec<u8>>>,
    bytes: Vec<u8>,
    expect: Expect,
}

/// A small deterministic generator (xorshift64*), so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        r.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut out = r.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Names no route accepts, as they appear in a request target (visible ASCII; odd bytes
/// percent-escaped).
fn bad_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "%ff",
        "%fe%ff",
        "%c3%28",
        "%ed%a0%80",
        "%00",
        "a%00b",
        "%01",
        "a%20b",
        "%2e%2e",
        "..",
        ".",
        "a/../b",
        "a//b",
        "a/./b",
        "%2F",
        "a:",
        ":versions",
        "a:b:c",
        "%e2%82%ac",
        "a*b",
        "%zz",
        "%",
        "a%",
        "%%",
        "a%2",
        "%5c",
        "a\\b",
        "a|b",
        "a;b",
        "a,b",
        "'",
        "%22",
        "%3c%3e",
        "a%0d%0ab",
        "%7f",
        "%2d%2d%2F",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("a".repeat(257));
    v.push("a".repeat(10_000));
    v.push(format!("{}/x", "b/".repeat(200)));
    v
}

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut http = |label: String, who: Who, bytes: Vec<u8>| {
        cases.push(Case {
            label,
            who,
            alpn: Some(vec![b"http/1.1".to_vec()]),
            bytes,
            expect: Expect::JsonError,
        });
    };
    let json = [("content-type", "application/json")];

    // ---- malformed names in every route that takes one ----
    for n in bad_names() {
        let short: String = n.chars().take(24).collect();
        for (m, t, who) in [
            ("GET", format!("/v1/deposits/{n}"), Who::Client),
            ("PUT", format!("/v1/deposits/{n}"), Who::Client),
            ("DELETE", format!("/v1/deposits/{n}"), Who::Client),
            ("POST", format!("/v1/deposits/{n}:undelete"), Who::Client),
            ("GET", format!("/v1/deposits/{n}:versions"), Who::Client),
            ("GET", format!("/v1/groups/{n}"), Who::Client),
            ("GET", format!("/v1/groups/{n}/keys"), Who::Client),
            ("POST", format!("/v1/groups/{n}/admit"), Who::Client),
            ("GET", format!("/v1/admin/groups/acme/{n}"), Who::Admin),
            ("GET", format!("/v1/admin/groups/{n}/g"), Who::Admin),
            ("PUT", format!("/v1/admin/orgs/{n}/auth"), Who::Admin),
            ("POST", format!("/v1/admin/orgs/{n}/tokens"), Who::Admin),
            ("POST", format!("/v1/admin/clients/{n}/approve"), Who::Admin),
            ("DELETE", format!("/v1/admin/orgs/{n}"), Who::Admin),
            ("GET", format!("/v1/admin/orgs/{n}/tokens"), Who::Admin),
            ("DELETE", format!("/v1/admin/orgs/{n}/tokens"), Who::Admin),
            (
                "DELETE",
                format!("/v1/admin/orgs/acme/tokens/{n}"),
                Who::Admin,
            ),
            ("DELETE", format!("/v1/admin/clients/{n}"), Who::Admin),
            ("DELETE", format!("/v1/admin/groups/acme/{n}"), Who::Admin),
            ("DELETE", format!("/v1/admin/groups/{n}/g"), Who::Admin),
        ] {
            let body: &[u8] = if m == "GET" || m == "DELETE" {
                b""
            } else {
                b"{}"
            };
            http(
                format!(
                    "name {short:?}: {m} {}",
                    t.chars().take(60).collect::<String>()
                ),
                who,
                request(m, &t, &json, body),
            );
        }
    }

    // ---- bad query strings ----
    for q in [
        "owner=",
        "owner=group:",
        "owner=zz",
        "owner=%ff",
        "owner=group:%00",
        "version=0",
        "version=-1",
        "version=%2B1",
        "version=01",
        "version=abc",
        "version=",
        "unknown=1",
        "version=1&version=2",
        "owner=a&owner=b",
        "%ff=1",
        "a=%zz",
        "version=99999999999999999999",
    ] {
        http(
            format!("query ?{q} on a deposit"),
            Who::Client,
            request("GET", &format!("/v1/deposits/k?{q}"), &[], b""),
        );
    }
    for q in [
        "limit=-5",
        "limit=abc",
        "limit=99999999999999999999",
        "page_token=garbage",
        "page_token=%ff",
        "prefix=%00",
        "prefix=%ff",
        "prefix=a%20b",
        "deleted=maybe",
        "x=1",
    ] {
        http(
            format!("query ?{q} on the listing"),
            Who::Client,
            request("GET", &format!("/v1/deposits?{q}"), &[], b""),
        );
    }
    for (t, who) in [
        ("/v1/admin/clients?state=weird", Who::Admin),
        ("/v1/admin/clients?org=%ff", Who::Admin),
        ("/v1/admin/clients?org=-bad", Who::Admin),
        ("/v1/admin/groups?org=%00", Who::Admin),
        ("/v1/admin/clients?limit=abc", Who::Admin),
        ("/v1/admin/clients?limit=-1", Who::Admin),
        ("/v1/admin/clients?limit=0", Who::Admin),
        ("/v1/admin/clients?limit=99999999999999999999", Who::Admin),
        ("/v1/admin/clients?limit=2&after=%ff", Who::Admin),
        ("/v1/admin/clients?after=acme/1/zz", Who::Admin),
        ("/v1/admin/audit/entries?from=abc", Who::Admin),
        ("/v1/admin/audit/entries?since=yesterday", Who::Admin),
        ("/v1/admin/audit/entries?limit=-1", Who::Admin),
        ("/v1/admin/audit/checkpoints?from=x", Who::Admin),
        ("/v1/recipients", Who::Client),
        ("/v1/recipients?principal=", Who::Client),
        ("/v1/recipients?principal=%ff", Who::Client),
        ("/v1/recipients?principal=group:", Who::Client),
        ("/?a=nope", Who::Nobody),
        ("/?a=%ff", Who::Nobody),
    ] {
        http(format!("query {t}"), who, request("GET", t, &[], b""));
    }

    for t in [
        "/v1/admin/orgs/acme?dry_run=maybe",
        "/v1/admin/orgs/acme?force=1",
        "/v1/admin/clients/00?dry_run=1",
        "/v1/admin/groups/acme/g?dry_run=%ff",
    ] {
        http(
            format!("query DELETE {t}"),
            Who::Admin,
            request("DELETE", t, &[], b""),
        );
    }

    // ---- bad headers on a put ----
    for (h, v) in [
        ("if-match", "\"+1\""),
        ("if-match", "+1"),
        ("if-match", "\"01\""),
        ("if-match", "\"0\""),
        ("if-match", "\"-1\""),
        ("if-match", "\" 1\""),
        ("if-match", "\"1"),
        ("if-match", "*"),
        ("if-match", "\"1\", \"2\""),
        ("if-match", "W/\"+2\""),
        ("if-match", "\"99999999999999999999\""),
        ("if-none-match", "\"1\""),
        ("if-none-match", "**"),
        ("if-none-match", ""),
        ("x-keysafe-encoding", "gzip"),
        ("x-keysafe-encoding", ""),
        ("x-keysafe-encoding", "AGE"),
        ("x-keysafe-acl-serial", "-1"),
        ("x-keysafe-acl-serial", "x"),
        ("x-keysafe-acl-serial", "99999999999999999999999"),
    ] {
        http(
            format!("header {h}: {v}"),
            Who::Client,
            request("PUT", "/v1/deposits/k", &[(h, v)], b"v"),
        );
    }
    http(
        "if-match and if-none-match together".into(),
        Who::Client,
        request(
            "PUT",
            "/v1/deposits/k",
            &[("if-match", "\"1\""), ("if-none-match", "*")],
            b"v",
        ),
    );
    // Token garbage comes from a certificate nobody registered (a wrong token locks a real
    // client, by design).
    for v in ["", "x", "v1.garbage", &"A".repeat(4000), "v1.1.AAAA"] {
        http(
            format!("token {:?}", v.chars().take(16).collect::<String>()),
            Who::Nobody,
            request("GET", "/v1/whoami", &[("x-keysafe-token", v)], b""),
        );
    }

    // ---- methods no route takes ----
    for m in [
        "PATCH",
        "OPTIONS",
        "TRACE",
        "FOO",
        "get",
        "PROPFIND",
        &"X".repeat(100),
    ] {
        for t in [
            "/v1/health",
            "/v1/deposits",
            "/v1/deposits/k",
            "/v1/register",
            "/v1/groups",
            "/v1/admin/orgs",
            "/",
            "/nope",
        ] {
            http(
                format!("method {m:.12} {t}"),
                Who::Client,
                request(m, t, &[], b""),
            );
        }
    }
    for t in [
        "/nope",
        "/v1",
        "/v1/",
        "/v2/health",
        "/v1/deposits/",
        "/v1/admin",
        "/V1/health",
    ] {
        http(
            format!("no route {t}"),
            Who::Nobody,
            request("GET", t, &[], b""),
        );
    }

    // ---- bad bodies on JSON routes ----
    let mut deep = "[".repeat(5000);
    deep.push_str(&"]".repeat(5000));
    let long = format!("{{\"name\":\"{}\"}}", "x".repeat(60_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("open brace", b"{".to_vec()),
        ("null", b"null".to_vec()),
        ("array", b"[]".to_vec()),
        ("string", b"\"x\"".to_vec()),
        ("unknown field", b"{\"zzz\":1}".to_vec()),
        (
            "wrong type",
            b"{\"name\":123,\"org\":[],\"member\":{}}".to_vec(),
        ),
        ("NUL bytes", b"{\"name\":\"a\0b\"}".to_vec()),
        (
            "escaped NUL",
            b"{\"name\":\"a\\u0000b\",\"org\":\"a\\u0000\"}".to_vec(),
        ),
        ("deep nesting", deep.into_bytes()),
        (
            "huge number",
            b"{\"version\":1e999,\"older_than_seconds\":-1}".to_vec(),
        ),
        (
            "invalid UTF-8",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        ),
        (
            "duplicate keys",
            b"{\"name\":\"a\",\"name\":\"b\"}".to_vec(),
        ),
        ("trailing garbage", b"{} x".to_vec()),
        ("long string", long.into_bytes()),
        ("lone surrogate", b"{\"name\":\"\\ud800\"}".to_vec()),
    ];
    let routes: &[(&str, &str, Who)] = &[
        ("POST", "/v1/register", Who::Nobody),
        ("POST", "/v1/admin/orgs", Who::Admin),
        ("PUT", "/v1/admin/orgs/acme/auth", Who::Admin),
        ("POST", "/v1/admin/orgs/acme/tokens", Who::Admin),
        ("POST", "/v1/groups", Who::Client),
        ("POST", "/v1/groups/g/admit", Who::Client),
        ("POST", "/v1/admin/groups", Who::Admin),
        ("POST", "/v1/admin/groups/acme/g/add-member", Who::Admin),
        ("POST", "/v1/admin/clients/disable-unactivated", Who::Admin),
        ("POST", "/v1/admin/unseal", Who::Admin),
        ("POST", "/v1/admin/keyring/retire", Who::Admin),
        ("POST", "/v1/admin/backup", Who::Admin),
        ("POST", "/v1/admin/audit/prune", Who::Admin),
        ("POST", "/v1/deposits/k:share", Who::Client),
    ];
    for (m, t, who) in routes {
        for (label, body) in &bodies {
            // serde reads a struct from a JSON array of its fields: for a body whose fields
            // are all optional, `[]` is a valid (empty) request, not a malformed one.
            if *t == "/v1/admin/orgs/acme/tokens" && *label == "array" {
                continue;
            }
            http(
                format!("body {label} to {m} {t}"),
                *who,
                request(m, t, &json, body),
            );
        }
        for ct in [
            "text/plain",
            "application/json; charset=utf-16",
            "multipart/form-data",
            "",
        ] {
            let h: Vec<(&str, &str)> = if ct.is_empty() {
                vec![]
            } else {
                vec![("content-type", ct)]
            };
            http(
                format!("content type {ct:?} to {m} {t}"),
                *who,
                request(m, t, &h, b"{\"zzz\":1}"),
            );
        }
    }

    // ---- HTTP/1 framing garbage ----
    let mut frame = |label: &str, bytes: Vec<u8>| {
        cases.push(Case {
            label: label.to_owned(),
            who: Who::Client,
            alpn: Some(vec![b"http/1.1".to_vec()]),
            bytes,
            expect: Expect::Close,
        });
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..40 {
        let n = 1 + (rng.next() % 2000) as usize;
        frame(&format!("random bytes #{i} ({n})"), rng.bytes(n));
    }
    let big_header = format!(
        "GET /v1/health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let many_headers = format!(
        "GET /v1/health HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..2000)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    let long_path = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "p".repeat(100_000));
    for (label, bytes) in [
        ("HTTP/9.9", b"GET / HTTP/9.9\r\nhost: x\r\n\r\n".to_vec()),
        ("header without colon", b"GET / HTTP/1.1\r\nfoo\r\n\r\n".to_vec()),
        ("NUL in a header", b"GET / HTTP/1.1\r\nx: a\0b\r\n\r\n".to_vec()),
        ("space in a header name", b"GET / HTTP/1.1\r\nbad name: v\r\n\r\n".to_vec()),
        ("oversize header", big_header.into_bytes()),
        ("2000 headers", many_headers.into_bytes()),
        ("100 KB path", long_path.into_bytes()),
        ("NUL in the path", b"GET /v1/\0health HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        ("raw high bytes in the path", b"GET /v1/deposits/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        ("space in the path", b"GET /v1/dep osits HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec()),
        ("LF only", b"GET /v1/health HTTP/1.1\nhost: x\n\n".to_vec()),
        ("bad chunk size", b"POST /v1/register HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec()),
        ("chunk size overflow", b"POST /v1/register HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffffff\r\n".to_vec()),
        ("negative length", b"POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n".to_vec()),
        ("length not a number", b"POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".to_vec()),
        ("two lengths", b"POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec()),
        ("length and chunked", b"POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("unknown transfer coding", b"POST /v1/register HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\nab".to_vec()),
        ("absolute form", b"GET https://evil.example/v1/health HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        ("asterisk form", b"OPTIONS * HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        ("authority form", b"CONNECT evil.example:443 HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        ("upgrade to h2c", b"GET /v1/health HTTP/1.1\r\nhost: x\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n".to_vec()),
        ("websocket upgrade", b"GET /v1/health HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n".to_vec()),
        ("request then garbage", b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n\x01\x02\x03garbage".to_vec()),
        ("only CRLFs", b"\r\n\r\n\r\n\r\n".to_vec()),
        ("expect 100-continue then nothing", b"PUT /v1/deposits/k HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 10\r\n\r\n".to_vec()),
    ] {
        frame(label, bytes);
    }

    // ---- HTTP/2 garbage (ALPN h2) ----
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let settings = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
    let with = |parts: &[&[u8]]| parts.concat();
    for (label, bytes) in [
        (
            "preface then random",
            with(&[&preface, &settings, &rng.bytes(300)]),
        ),
        (
            "settings of a bad length",
            with(&[&preface, &[0, 0, 5, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]]),
        ),
        (
            "headers with broken HPACK",
            with(&[
                &preface,
                &settings,
                &[0, 0, 4, 1, 5, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
            ]),
        ),
        (
            "data on stream 0",
            with(&[
                &preface,
                &settings,
                &[0, 0, 2, 0, 0, 0, 0, 0, 0, b'h', b'i'],
            ]),
        ),
        (
            "a frame declared 16 MiB",
            with(&[&preface, &settings, &[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]]),
        ),
        (
            "window update of zero",
            with(&[
                &preface,
                &settings,
                &[0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        (
            "unknown frame types",
            with(&[&preface, &settings, &[0, 0, 1, 0xee, 0, 0, 0, 0, 3, 7]]),
        ),
        (
            "goaway at once",
            with(&[
                &preface,
                &settings,
                &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ]),
        ),
        ("partial preface", preface[..10].to_vec()),
        (
            "HTTP/1 over h2",
            b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        ),
        (
            "even stream id",
            with(&[&preface, &settings, &[0, 0, 1, 1, 5, 0, 0, 0, 2, 0x82]]),
        ),
        (
            "rst floods",
            with(&[
                &preface,
                &settings,
                &(1..200u32)
                    .flat_map(|i| {
                        let id = (i * 2 + 1).to_be_bytes();
                        [0, 0, 4, 3, 0, id[0], id[1], id[2], id[3], 0, 0, 0, 8]
                    })
                    .collect::<Vec<u8>>(),
            ]),
        ),
    ] {
        cases.push(Case {
            label: format!("h2 {label}"),
            who: Who::Nobody,
            alpn: Some(vec![b"h2".to_vec()]),
            bytes,
            expect: Expect::Close,
        });
    }

    // ---- TLS-level garbage (plain TCP to the TLS port) ----
    for (label, bytes) in [
        (
            "plaintext HTTP",
            b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        ),
        (
            "truncated ClientHello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        ),
        (
            "SSLv2 hello",
            b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10".to_vec(),
        ),
        ("alert first", b"\x15\x03\x03\x00\x02\x02\x28".to_vec()),
        ("random", rng.bytes(700)),
        ("empty", Vec::new()),
    ] {
        cases.push(Case {
            label: format!("tls {label}"),
            who: Who::Nobody,
            alpn: None,
            bytes,
            expect: Expect::Close,
        });
    }
    cases
}

fn with_token(bytes: &[u8], token: Option<&str>) -> Vec<u8> {
    let Some(t) = token else {
        return bytes.to_vec();
    };
    // After the request line.
    let Some(pos) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return bytes.to_vec();
    };
    let mut out = bytes[..pos + 2].to_vec();
    out.extend_from_slice(format!("x-keysafe-token: {t}\r\n").as_bytes());
    out.extend_from_slice(&bytes[pos + 2..]);
    out
}

#[tokio::test]
async fn bad_requests_get_json_errors_or_a_clean_close_and_change_nothing() {
    let ts = TestServer::start_with(|c| {
        c.handshake_timeout = Duration::from_secs(2);
        c.connection.first_byte_timeout = Duration::from_secs(2);
        c.connection.header_read_timeout = Duration::from_secs(2);
        c.connection.body_read_timeout = Duration::from_secs(1);
        c.connection.idle_timeout = Duration::from_secs(2);
        c.connection.close_grace = Duration::from_secs(1);
        c.token_rotation = Duration::from_secs(3600);
        // The corpus comes from one address, far faster than any client.
        c.registration_failure_limit = 100_000;
    })
    .await;
    let c = ts.new_client("acme").await;
    let admin_home = ClientHome::load(&ts.summary.admin_home).unwrap();
    let raw_client = Raw {
        identity: Some(c.home.identity().unwrap()),
        ..Raw::default()
    };
    let raw_admin = Raw {
        identity: Some(admin_home.identity().unwrap()),
        ..Raw::default()
    };
    let (_d, stranger) = ts.unregistered_client();
    let _ = stranger;
    let stranger_home = tempfile::tempdir().unwrap();
    let raw_nobody = Raw {
        identity: Some(
            ClientHome::ensure_identity(&stranger_home.path().join("h"), "nobody").unwrap(),
        ),
        ..Raw::default()
    };
    let before = ts.service().store().audit_head().seq;
    let cases = corpus();
    assert!(cases.len() >= 700, "a corpus of {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let (base, token) = match case.who {
            Who::Nobody => (&raw_nobody, None),
            Who::Client => (&raw_client, c.client.current_token()),
            Who::Admin => (&raw_admin, ts.admin.current_token()),
        };
        let got = match &case.alpn {
            None => {
                let mut tcp = base.tcp(ts.addr).await;
                let _ = tcp.write_all(&case.bytes).await;
                read_to_close(&mut tcp, Duration::from_secs(30)).await
            }
            Some(alpn) => {
                let raw = Raw {
                    alpn: alpn.clone(),
                    identity: base.identity.clone(),
                    from: None,
                };
                let bytes = match case.expect {
                    Expect::JsonError => {
                        with_token(&case.bytes, token.as_deref().map(|t| t.as_str()))
                    }
                    Expect::Close => case.bytes.clone(),
                };
                exchange(ts.addr, &raw, &bytes).await
            }
        };
        let Some(got) = got else {
            failures.push(format!("{}: no close within 30 s (hang)", case.label));
            continue;
        };
        match case.expect {
            Expect::JsonError => match parse_answer(&got) {
                None => failures.push(format!(
                    "{}: no HTTP answer ({} bytes)",
                    case.label,
                    got.len()
                )),
                Some(a) => {
                    let body: Option<ErrorBody> = serde_json::from_slice(&a.body).ok();
                    let json = a.header("content-type") == Some("application/json");
                    match body {
                        Some(b)
                            if (400..500).contains(&a.status)
                                && json
                                && b.error.code.http_status() == a.status => {}
                        _ => failures.push(format!(
                            "{}: {} {:?} {}",
                            case.label,
                            a.status,
                            a.header("content-type"),
                            String::from_utf8_lossy(&a.body[..a.body.len().min(120)])
                        )),
                    }
                }
            },
            Expect::Close => {
                // A TLS alert or nothing; or a bare 4xx from the HTTP layer (or our JSON 4xx).
                if let Some(a) = parse_answer(&got)
                    && !(400..500).contains(&a.status)
                    && !case.label.starts_with("h2")
                {
                    // A request hidden in the garbage that parses may be answered normally,
                    // but never with a 5xx.
                    if a.status >= 500 {
                        failures.push(format!("{}: answered {}", case.label, a.status));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The server still serves a normal client, and the bad requests changed nothing.
    c.client
        .put(
            &keysafe_proto::DepositName::parse("after").unwrap(),
            b"v".to_vec(),
            keysafe_client::Precondition::None,
        )
        .await
        .unwrap();
    assert_eq!(
        c.client
            .get(&keysafe_proto::DepositName::parse("after").unwrap(), None)
            .await
            .unwrap()
            .payload,
        &b"v"[..]
    );
    let orgs = ts.admin.list_orgs().await.unwrap().orgs;
    assert_eq!(orgs.len(), 2, "only keysafe-admins and acme: {orgs:?}");
    assert!(c.client.groups().await.unwrap().groups.is_empty());
    assert_eq!(ts.anonymous_client().health().await.unwrap().status, "ok");
    assert!(ts.service().store().audit_head().seq >= before);
    let _ = ErrorCode::ALL;
}
