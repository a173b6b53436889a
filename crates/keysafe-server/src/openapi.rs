//! The OpenAPI 3.1 contract of the HTTP API, served at `GET /v1/openapi.json`.
//!
//! Nothing in it is written by hand twice: the schemas are derived from the wire types in
//! `keysafe-proto` (the same types the server and the clients serialise), the operations from
//! the `#[utoipa::path]` attribute on each handler, and the router registers each handler
//! through `utoipa_axum::routes!`, which takes the path from that attribute, so a route
//! cannot be served without being documented. (The deposit routes share one wildcard route,
//! `/v1/deposits/{*path}`, which dispatches on the `:operation` suffix; their operations are
//! listed in [`ApiDoc`]; the dispatcher serves only the suffixes `deposits::OPERATIONS` lists,
//! and a unit test below checks that list against the document.)
//!
//! [`finish`] then adds what every operation has in common, from the operation's own shape:
//! the security requirement decides the `401`/`403` answers, a request body the `400`/`413`
//! ones, parameters the `400` one, and every operation may answer `408`, `500` and `503`. Each
//! error answer's schema is the error body with `code` restricted to the codes sent with that
//! status ([`ErrorCode::http_status`]), so the contract states which stable codes may come.

use keysafe_proto::ErrorCode;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

/// The security scheme of the client certificate (mutual TLS).
pub const MUTUAL_TLS: &str = "mutualTLS";
/// The security scheme of the sequenced token header.
pub const SEQUENCED_TOKEN: &str = "sequencedToken";

/// The operations registered outside `routes!` (the deposit wildcard route) and the document's
/// fixed parts.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keysafe",
        description = "The keysafe key trustee HTTP API. Every connection is TLS; clients \
                       authenticate with a client certificate (mutual TLS) and a sequenced \
                       token. docs/api.md describes the rules in prose.",
        license(name = "see the repository"),
    ),
    paths(
        crate::routes::deposits::get::get,
        crate::routes::deposits::put::put,
        crate::routes::deposits::delete,
        crate::routes::deposits::versions,
        crate::routes::deposits::acl,
        crate::routes::deposits::undelete,
        crate::routes::deposits::purge,
        crate::routes::deposits::share,
    ),
    components(schemas(keysafe_proto::ErrorBody, keysafe_proto::ErrorCode)),
    tags(
        (name = "public", description = "Open to every caller."),
        (name = "clients", description = "Registration and the caller's own record."),
        (name = "deposits", description = "Deposits: versions, ACLs, sharing."),
        (name = "groups", description = "Groups of the caller's organisation."),
        (name = "admin", description = "Administration: organisations, clients, groups, tokens."),
        (name = "audit", description = "The signed audit trail."),
        (name = "keyring", description = "Seal, keyring rotation and backups."),
        (name = "cluster", description = "Nodes sharing the database."),
    ),
)]
pub struct ApiDoc;

/// The finished document as JSON: the router's operations merged in, the server version, the
/// security schemes and the common answers.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> Value {
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut v = serde_json::to_value(&doc).unwrap_or_else(|_| json!({}));
    v["openapi"] = json!("3.1.0");
    let Some(components) = object(&mut v, "components") else {
        return v;
    };
    components.insert(
        "securitySchemes".to_owned(),
        json!({
            MUTUAL_TLS: {
                "type": "mutualTLS",
                "description": "The client's self-signed certificate; its identity is the \
                                SHA-256 of the DER SubjectPublicKeyInfo (the fingerprint)."
            },
            SEQUENCED_TOKEN: {
                "type": "apiKey",
                "in": "header",
                "name": keysafe_proto::HEADER_TOKEN,
                "description": "The client's current sequenced token (COUNTER.SECRET). A new \
                                one may come back in the x-keysafe-token response header on \
                                any answer; keep the highest counter."
            }
        }),
    );
    // The headers every answer (or many) carry, described once.
    components.insert(
        "headers".to_owned(),
        json!({
            REQUEST_ID: {"description": "The request id (also in error bodies and the log).",
                         "required": true, "schema": {"type": "string"}},
            CACHE_CONTROL: {"description": "Always no-store.", "required": true,
                            "schema": {"type": "string", "const": "no-store"}},
            NEW_TOKEN: {"description": "A new sequenced token, when one was issued (at \
                                        registration and at each rotation, on any status); keep \
                                        the highest counter.",
                        "schema": {"type": "string"}},
            RETRY_AFTER: {"description": "Seconds to wait before retrying, with read_only.",
                          "schema": {"type": "integer", "minimum": 0}},
        }),
    );
    let mut statuses: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.http_status()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    if let Some(schemas) = components
        .entry("schemas")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    {
        for status in &statuses {
            schemas.insert(error_schema_name(*status), error_schema(*status));
        }
    }
    if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if METHODS.contains(&method.as_str()) {
                    common_answers(op);
                }
            }
        }
    }
    v
}

/// The HTTP methods a path item may hold.
pub const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn object<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    v.as_object_mut()?
        .entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()
}

const REQUEST_ID: &str = "RequestId";
const CACHE_CONTROL: &str = "CacheControl";
const NEW_TOKEN: &str = "NewSequencedToken";
const RETRY_AFTER: &str = "RetryAfter";

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

fn error_schema_name(status: u16) -> String {
    format!("Error{status}")
}

/// The error body with `code` limited to the codes sent with `status`.
fn error_schema(status: u16) -> Value {
    let codes: Vec<&str> = codes_for(status);
    json!({
        "description": format!("The error body of a {status} answer."),
        "allOf": [{"$ref": "#/components/schemas/ErrorBody"}],
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": {"enum": codes}}
            }
        }
    })
}

fn codes_for(status: u16) -> Vec<&'static str> {
    ErrorCode::ALL
        .iter()
        .filter(|c| c.http_status() == status)
        .map(|c| c.as_str())
        .collect()
}

fn has_security(op: &Value, scheme: &str) -> bool {
    op.get("security")
        .and_then(Value::as_array)
        .is_some_and(|reqs| reqs.iter().any(|r| r.get(scheme).is_some()))
}

fn common_answers(op: &mut Value) {
    let token = has_security(op, SEQUENCED_TOKEN);
    let certificate = has_security(op, MUTUAL_TLS);
    let body = op.get("requestBody").is_some();
    let params = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    let mut add = |status: u16, why: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| json!({"description": why}));
    };
    if certificate {
        add(401, "The caller is not authenticated (see the code).");
    }
    if token {
        add(
            403,
            "The caller is authenticated but refused: pending, disabled, a suspected clone, \
             or not allowed to do this.",
        );
    }
    if body || params {
        add(
            400,
            "The request is malformed (path, query, headers or body).",
        );
    }
    if body {
        add(413, "The request body is larger than this route's limit.");
    }
    add(
        408,
        "The request body stopped arriving, or the request took too long.",
    );
    add(500, "An unexpected server error; the log has the cause.");
    add(
        503,
        "The database, the seal or the audit trail is unavailable, or the cluster is \
         read-only (then with Retry-After); retry.",
    );
    for (status, response) in responses.iter_mut() {
        let Ok(status) = status.parse::<u16>() else {
            continue;
        };
        let Some(response) = response.as_object_mut() else {
            continue;
        };
        let headers = response
            .entry("headers")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        let Some(headers) = headers else { continue };
        headers.insert(
            keysafe_proto::HEADER_REQUEST_ID.to_owned(),
            header_ref(REQUEST_ID),
        );
        headers.insert("cache-control".to_owned(), header_ref(CACHE_CONTROL));
        if token || status == 201 && certificate {
            headers.insert(
                keysafe_proto::HEADER_TOKEN.to_owned(),
                header_ref(NEW_TOKEN),
            );
        }
        if status >= 400 && !response.contains_key("content") {
            let codes = codes_for(status);
            let described = response
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            response.insert(
                "description".to_owned(),
                json!(format!("{described} Codes: {}.", codes.join(", ")).trim()),
            );
            response.insert(
                "content".to_owned(),
                json!({"application/json": {"schema": {
                    "$ref": format!("#/components/schemas/{}", error_schema_name(status))
                }}}),
            );
        }
        if status == 503
            && let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut)
        {
            headers.insert("retry-after".to_owned(), header_ref(RETRY_AFTER));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn operations(doc: &Value) -> Vec<(String, String)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if METHODS.contains(&method.as_str()) {
                    ops.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        ops.sort();
        ops
    }

    /// The deposit routes share one wildcard route whose dispatcher (`routes::deposits`)
    /// knows these operations; each must be documented, and nothing else under it.
    #[test]
    fn deposit_operations_are_documented() {
        let doc = crate::routes::openapi_document();
        let documented: Vec<(String, String)> = operations(&doc)
            .into_iter()
            .filter(|(_, p)| p.starts_with("/v1/deposits/"))
            .collect();
        let mut expected: Vec<(String, String)> = crate::routes::deposits::OPERATIONS
            .iter()
            .map(|(m, op)| {
                let path = match op {
                    Some(op) => format!("/v1/deposits/{{name}}:{op}"),
                    None => "/v1/deposits/{name}".to_owned(),
                };
                ((*m).to_owned(), path)
            })
            .collect();
        expected.sort();
        assert_eq!(documented, expected);
    }

    /// Every path is an OpenAPI path template (no axum wildcard), and every operation
    /// documents the answers every request may get, each error with its codes.
    #[test]
    fn every_operation_has_its_common_answers() {
        let doc = crate::routes::openapi_document();
        let ops = operations(&doc);
        assert!(ops.len() >= 50, "{} operations", ops.len());
        for (method, path) in ops {
            assert!(!path.contains('*'), "{path}");
            let op = &doc["paths"][&path][method.to_lowercase()];
            let responses = op["responses"].as_object().unwrap();
            for status in ["408", "500", "503"] {
                assert!(responses.contains_key(status), "{method} {path}: {status}");
            }
            if has_security(op, SEQUENCED_TOKEN) {
                for status in ["401", "403"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
            }
            for (status, r) in responses {
                let id = &r["headers"]["x-request-id"]["$ref"];
                let id = doc.pointer(&id.as_str().unwrap()[1..]).unwrap();
                assert!(id["required"] == json!(true), "{method} {path} {status}");
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        r["content"]["application/json"]["schema"].is_object(),
                        "{method} {path} {status}: error body"
                    );
                }
            }
        }
    }

    /// Each status's error schema names exactly the codes sent with that status.
    #[test]
    fn error_schemas_list_the_codes_of_their_status() {
        let doc = crate::routes::openapi_document();
        for code in ErrorCode::ALL {
            let name = error_schema_name(code.http_status());
            let codes = &doc["components"]["schemas"][&name]["properties"]["error"]["properties"]["code"]
                ["enum"];
            assert!(
                codes.as_array().unwrap().contains(&json!(code.as_str())),
                "{code} missing from {name}"
            );
        }
        let all: usize = ErrorCode::ALL.len();
        let listed: usize = doc["components"]["schemas"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("Error") && k[5..].parse::<u16>().is_ok())
            .map(|(_, v)| {
                v["properties"]["error"]["properties"]["code"]["enum"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(listed, all, "each code under exactly one status");
    }
}
