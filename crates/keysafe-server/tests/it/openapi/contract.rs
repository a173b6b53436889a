//! The checker: a request is routed to its documented operation the way the server routes it
//! (literal segments win over parameters), sent over real TLS, and its answer compared with
//! what the document says that operation answers.

use keysafe_client::KeysafeClient;
use keysafe_client::reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The HTTP methods a path item may hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// One answer, as the test saw it.
pub struct Answer {
    pub headers: http::HeaderMap,
    pub json: Option<Value>,
}

impl Answer {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    }

    pub fn json(&self) -> &Value {
        self.json.as_ref().expect("a JSON body")
    }
}

/// The document, and what the test exercised of it.
pub struct Contract {
    pub doc: Value,
    /// (METHOD, path template) -> statuses seen.
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
}

/// A request on its way: `c.req(who, M::GET, "/v1/...").header(..).json(..).expect(200)`.
pub struct Req<'a> {
    c: &'a mut Contract,
    who: &'a KeysafeClient,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<(Option<&'static str>, Vec<u8>)>,
}

impl Req<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn json(mut self, v: Value) -> Self {
        self.body = Some((Some("application/json"), serde_json::to_vec(&v).unwrap()));
        self
    }

    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.body = Some((None, b.to_vec()));
        self
    }

    /// Sends the request and checks the answer: its status is `status` and is documented for
    /// the operation, and the answer matches what the document says of that status.
    pub async fn expect(self, status: u16) -> Answer {
        let Req {
            c,
            who,
            method,
            path,
            headers,
            body,
        } = self;
        let template = c.route(&method, &path);
        let what = format!("{method} {path} (documented as {template})");
        let mut rb = who.raw_request(method.clone(), &path);
        for (k, v) in &headers {
            rb = rb.header(k, v);
        }
        if let Some((content_type, bytes)) = body {
            if let Some(ct) = content_type {
                rb = rb.header("content-type", ct);
            }
            rb = rb.body(bytes);
        }
        let r = rb.send().await.unwrap();
        let got = r.status().as_u16();
        let answer_headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        if let Some(t) = answer_headers.get("x-keysafe-token") {
            // The client keeps the highest counter; a stale offer changes nothing.
            let _ = who.offer_token(t.to_str().unwrap());
        }
        let text: String = String::from_utf8_lossy(&bytes).chars().take(400).collect();
        assert_eq!(got, status, "{what}: unexpected status; body {text}");
        let json = c.check(&what, &method, &template, got, &answer_headers, &bytes);
        c.seen
            .entry((method.as_str().to_owned(), template))
            .or_default()
            .insert(got);
        Answer {
            headers: answer_headers,
            json,
        }
    }
}

impl Contract {
    pub fn new(doc: Value) -> Self {
        Self {
            doc,
            seen: BTreeMap::new(),
        }
    }

    pub fn req<'a>(&'a mut self, who: &'a KeysafeClient, method: Method, path: &str) -> Req<'a> {
        Req {
            c: self,
            who,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Every (METHOD, path template) of the document.
    pub fn operations(&self) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if METHODS.contains(&method.as_str()) {
                    ops.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    /// The operations never answered with a success, and those never exercised at all.
    pub fn not_exercised(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for op in self.operations() {
            match self.seen.get(&op) {
                Some(statuses) if statuses.iter().any(|s| *s < 400) => {}
                Some(statuses) => missing.push(format!("{op:?} only answered {statuses:?}")),
                None => missing.push(format!("{op:?} never exercised")),
            }
        }
        missing
    }

    /// The documented operation `method path` reaches: among the templates it is an instance
    /// of, the one with the most literal characters (as the router prefers static segments).
    fn route(&self, method: &Method, path: &str) -> String {
        let path = path.split('?').next().unwrap();
        let method = method.as_str().to_lowercase();
        let mut best: Option<(usize, String)> = None;
        for (template, item) in self.doc["paths"].as_object().unwrap() {
            if item.get(&method).is_none() || !matches_template(template, path) {
                continue;
            }
            let literal = literal_len(template);
            if best.as_ref().is_none_or(|(l, _)| literal > *l) {
                best = Some((literal, template.clone()));
            }
        }
        best.map(|(_, t)| t)
            .unwrap_or_else(|| panic!("{method} {path}: no documented operation"))
    }

    /// Checks an answer against the document; returns its JSON body, if any.
    fn check(
        &self,
        what: &str,
        method: &Method,
        template: &str,
        status: u16,
        headers: &http::HeaderMap,
        bytes: &[u8],
    ) -> Option<Value> {
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        let text: String = String::from_utf8_lossy(bytes).chars().take(400).collect();
        let response = op["responses"].get(status.to_string()).unwrap_or_else(|| {
            panic!("{what}: status {status} is not documented for this operation; body {text}")
        });
        let response = self.resolve(response);
        if let Some(hs) = response["headers"].as_object() {
            for (name, h) in hs {
                if self.resolve(h)["required"] == json!(true) {
                    assert!(
                        headers.contains_key(name.as_str()),
                        "{what}: documented required header {name} missing"
                    );
                }
            }
        }
        let media = headers.get("content-type").map(|v| {
            v.to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim()
                .to_owned()
        });
        match (&response["content"], media) {
            (Value::Object(content), Some(media)) => {
                let entry = content.get(&media).unwrap_or_else(|| {
                    panic!("{what}: content type {media} not documented for {status}")
                });
                if media != "application/json" {
                    return None;
                }
                let v: Value = serde_json::from_slice(bytes)
                    .unwrap_or_else(|e| panic!("{what}: the body is not JSON: {e}"));
                self.validate(what, &entry["schema"], &v);
                Some(v)
            }
            (Value::Null, _) => {
                assert!(bytes.is_empty(), "{what}: a body where none is documented");
                None
            }
            (content, media) => panic!("{what}: answered {media:?}, documented {content}"),
        }
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self.doc.pointer(r.trim_start_matches('#')).unwrap(),
            None => v,
        }
    }

    /// Panics unless `instance` is valid against `schema` (draft 2020-12).
    pub fn validate(&self, what: &str, schema: &Value, instance: &Value) {
        // The schema with the document's components beside it, so that its
        // `#/components/schemas/...` references resolve within the same resource.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": self.doc["components"],
        });
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the body does not match its schema:\n{}\nbody: {instance}",
            errors.join("\n")
        );
    }
}

fn literal_len(template: &str) -> usize {
    let mut n = 0;
    let mut inside = false;
    for ch in template.chars() {
        match ch {
            '{' => inside = true,
            '}' => inside = false,
            _ if !inside => n += 1,
            _ => {}
        }
    }
    n
}

/// Whether `path` is an instance of `template`: a parameter is one or more characters other
/// than '/', except a deposit `{name}`, which may contain '/'.
pub fn matches_template(template: &str, path: &str) -> bool {
    fn go(t: &str, p: &str) -> bool {
        let Some(open) = t.find('{') else {
            return t == p;
        };
        if !p.starts_with(&t[..open]) {
            return false;
        }
        let close = t[open..].find('}').unwrap() + open;
        let slashes = t.starts_with("/v1/deposits/") && &t[open + 1..close] == "name";
        let (rest, p) = (&t[close + 1..], &p[open..]);
        (1..=p.len())
            .take_while(|&n| slashes || !p[..n].contains('/'))
            .any(|n| p.is_char_boundary(n) && go(rest, &p[n..]))
    }
    go(template, path)
}

/// Every `$ref` in `v` points at something in `doc`.
pub fn check_refs(doc: &Value, v: &Value, at: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    let r = x.as_str().expect("a $ref is a string");
                    assert!(r.starts_with("#/"), "{at}: external $ref {r}");
                    assert!(
                        doc.pointer(&r[1..]).is_some(),
                        "{at}: $ref {r} does not resolve"
                    );
                } else {
                    check_refs(doc, x, &format!("{at}/{k}"));
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_refs(doc, x, &format!("{at}/{i}"));
            }
        }
        _ => {}
    }
}

/// The checker is not vacuous: a body that breaks its schema, an error code under the wrong
/// status, and a path outside its template are all caught.
#[test]
fn the_checker_catches_what_it_must() {
    let mut doc = keysafe_server::openapi_document();
    let c = Contract::new(doc.clone());
    let health = json!({"status": "ok", "version": "1", "fingerprint": "0".repeat(64)});
    let schema = json!({"$ref": "#/components/schemas/Health"});
    c.validate("Health", &schema, &health);
    doc["components"]["schemas"]["Health"]["required"]
        .as_array_mut()
        .unwrap()
        .push(json!("uptime"));
    let broken = Contract::new(doc);
    let r = std::panic::catch_unwind(|| broken.validate("Health", &schema, &health));
    assert!(
        r.is_err(),
        "a body missing a required field passed validation"
    );
    let not_found = json!({"error": {"code": "not_found", "message": "m", "request_id": "r"}});
    c.validate(
        "404",
        &json!({"$ref": "#/components/schemas/Error404"}),
        &not_found,
    );
    let r = std::panic::catch_unwind(|| {
        c.validate(
            "409",
            &json!({"$ref": "#/components/schemas/Error409"}),
            &not_found,
        )
    });
    assert!(r.is_err(), "not_found passed as a 409 answer");
    assert!(matches_template(
        "/v1/deposits/{name}:acl",
        "/v1/deposits/a/b:acl"
    ));
    assert!(!matches_template(
        "/v1/deposits/{name}:acl",
        "/v1/deposits/a/b"
    ));
    assert!(!matches_template("/v1/groups/{name}", "/v1/groups/"));
    assert!(!matches_template("/v1/groups/{name}", "/v1/groups/a/keys"));
    // Routed as the server routes: the operation suffix and the static segment win.
    let m = Method::GET;
    assert_eq!(
        c.route(&m, "/v1/deposits/a/b:acl"),
        "/v1/deposits/{name}:acl"
    );
    assert_eq!(c.route(&m, "/v1/deposits/a/b"), "/v1/deposits/{name}");
    assert_eq!(
        c.route(&Method::POST, "/v1/admin/clients/disable-unactivated"),
        "/v1/admin/clients/disable-unactivated"
    );
    assert_eq!(c.route(&m, "/v1/groups/t/keys"), "/v1/groups/{name}/keys");
}
