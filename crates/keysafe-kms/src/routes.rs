//! The KMS operations of `/kms/v1/`: ACL checks in Hadoop's order, JSON shapes and status codes
//! exactly as `KMS.java` answers, and the audit log. Authentication happened before (`http`).

use crate::acl::{KeyOp, OpType};
use crate::backend::{KeyMeta, KeyVersionRecord, split_version_name};
use crate::crypto::{b64_in, b64_out};
use crate::error::{KmsError, KmsResult};
use crate::gateway::Gateway;
use crate::http::{empty, json_response, query_get};
use crate::kms::{CreateRequest, Eek, Kms, Metadata};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The most distinct key names one `GET /keys/metadata` may ask for.
pub const MAX_METADATA_BATCH: usize = 5_000;

fn parse_body(body: &[u8]) -> KmsResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| KmsError::illegal(format!("the request body is not valid JSON: {e}")))
}

fn str_field<'a>(v: &'a Value, k: &str) -> KmsResult<Option<&'a str>> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KmsError::illegal(format!(
            "Parameter '{k}' must be a string"
        ))),
    }
}

fn required<'a>(v: &'a Value, k: &str) -> KmsResult<&'a str> {
    match str_field(v, k)? {
        None => Err(KmsError::illegal(format!("Parameter '{k}' cannot be null"))),
        Some("") => Err(KmsError::illegal(format!(
            "Parameter '{k}' cannot be empty"
        ))),
        Some(s) => Ok(s),
    }
}

fn b64_field(v: &Value, k: &str) -> KmsResult<zeroize::Zeroizing<Vec<u8>>> {
    b64_in(required(v, k)?).map_err(|e| KmsError::illegal(format!("Parameter '{k}': {e}")))
}

fn material_field(v: &Value) -> KmsResult<Option<zeroize::Zeroizing<Vec<u8>>>> {
    match str_field(v, "material")? {
        None => Ok(None),
        Some(s) => b64_in(s)
            .map(Some)
            .map_err(|e| KmsError::illegal(format!("Parameter 'material': {e}"))),
    }
}

fn kv_json(rec: &KeyVersionRecord, with_material: bool) -> Value {
    json!({
        "name": rec.name,
        "versionName": rec.version_name(),
        "material": if with_material { Value::String(b64_out(&rec.material)) } else { Value::Null },
    })
}

fn meta_json(name: &str, m: &Metadata) -> Value {
    json!({
        "name": name,
        "cipher": m.meta.cipher,
        "length": m.meta.length,
        "description": m.meta.description,
        "attributes": m.meta.attributes,
        "created": m.meta.created,
        "versions": m.versions,
    })
}

fn eek_json(e: &Eek) -> Value {
    json!({
        "versionName": e.version_name,
        "iv": b64_out(&e.iv),
        "encryptedKeyVersion": {
            "name": e.key_name,
            "versionName": "EEK",
            "material": b64_out(&e.material),
        },
    })
}

/// Who the request runs as.
pub struct Caller {
    /// The effective user (the `doAs` user when impersonating).
    pub user: String,
    pub groups: Vec<String>,
}

pub struct Ctx<'a> {
    pub gw: &'a Gateway,
    pub caller: Caller,
    pub method: Method,
}

impl Ctx<'_> {
    fn allowed(&self, op: OpType) -> bool {
        self.gw
            .acls
            .get()
            .has_access(op, &self.caller.user, &self.caller.groups)
    }

    /// `KMS.assertAccess`: the operation ACL and blacklist.
    fn assert_access(&self, op: OpType, kms_op: &str, key: Option<&str>) -> KmsResult<()> {
        if self.allowed(op) {
            return Ok(());
        }
        self.gw.audit.unauthorized(kms_op, key, &self.caller.user);
        Err(KmsError::authz(match key {
            Some(k) => format!(
                "User:{} not allowed to do '{kms_op}' on '{k}'",
                self.caller.user
            ),
            None => format!("User:{} not allowed to do '{kms_op}'", self.caller.user),
        }))
    }

    /// `KeyAuthorizationKeyProvider.doAccessCheck`: skipped for missing keys.
    async fn assert_key(&self, name: &str, op: KeyOp, kms_op: &str) -> KmsResult<()> {
        if !self.gw.key_authorization {
            return Ok(());
        }
        let m = self.gw.kms.metadata(name).await?;
        self.assert_key_with(name, m.as_ref().map(|m| &m.meta), op, kms_op)
    }

    /// [`Self::assert_key`] with the key's metadata already at hand (None: no such key). Any
    /// version of the key carries it: a roll copies the metadata, and no operation changes it.
    fn assert_key_with(
        &self,
        name: &str,
        m: Option<&KeyMeta>,
        op: KeyOp,
        kms_op: &str,
    ) -> KmsResult<()> {
        if !self.gw.key_authorization {
            return Ok(());
        }
        let Some(m) = m else {
            return Ok(());
        };
        let acl_name = m
            .attributes
            .get("key.acl.name")
            .cloned()
            .unwrap_or_else(|| name.to_owned());
        if self
            .gw
            .acls
            .get()
            .key_allowed(&acl_name, &self.caller.user, &self.caller.groups, op)
        {
            return Ok(());
        }
        self.gw
            .audit
            .unauthorized(kms_op, Some(name), &self.caller.user);
        Err(KmsError::authz(format!(
            "User [{}] is not authorized to perform [{}] on key with ACL name [{acl_name}]!!",
            self.caller.user,
            op.as_str()
        )))
    }

    fn ok(&self, op: &str, key: Option<&str>, extra: &str) {
        self.gw.audit.ok(op, key, &self.caller.user, extra);
    }
}

fn not_found(method: &Method, segs: &[String]) -> KmsError {
    KmsError::illegal(format!(
        "no such KMS operation: {method} /kms/v1/{}",
        segs.join("/")
    ))
    .with_status(StatusCode::NOT_FOUND)
}

pub async fn route(
    ctx: &Ctx<'_>,
    segs: &[String],
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> KmsResult<Response> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = &ctx.method;
    match (m.clone(), s.as_slice()) {
        (Method::POST, ["keys"]) => create_key(ctx, headers, body).await,
        (Method::GET, ["keys", "names"]) => {
            ctx.assert_access(OpType::GetKeys, "GET_KEYS", None)?;
            let names = ctx.gw.kms.names().await?;
            ctx.ok("GET_KEYS", None, "");
            Ok(json_response(StatusCode::OK, &json!(names)))
        }
        (Method::GET, ["keys", "metadata"]) => keys_metadata(ctx, query).await,
        (Method::DELETE, ["key", name]) => {
            ctx.assert_access(OpType::Delete, "DELETE_KEY", Some(name))?;
            ctx.assert_key(name, KeyOp::Management, "DELETE_KEY")
                .await?;
            ctx.gw.kms.delete(name).await?;
            ctx.ok("DELETE_KEY", Some(name), "");
            Ok(empty(StatusCode::OK))
        }
        (Method::POST, ["key", name]) => {
            let v = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                parse_body(body)?
            };
            let material = material_field(&v)?;
            ctx.assert_access(OpType::Rollover, "ROLL_NEW_VERSION", Some(name))?;
            if material.is_some() {
                ctx.assert_access(OpType::SetKeyMaterial, "ROLL_NEW_VERSION", Some(name))?;
            }
            ctx.assert_key(name, KeyOp::Management, "ROLL_NEW_VERSION")
                .await?;
            let user_material = material.is_some();
            let rec = ctx.gw.kms.roll(name, material).await?;
            ctx.ok(
                "ROLL_NEW_VERSION",
                Some(name),
                &format!(
                    "UserProvidedMaterial:{user_material} NewVersion:{}",
                    rec.version_name()
                ),
            );
            Ok(json_response(
                StatusCode::OK,
                &kv_json(&rec, ctx.allowed(OpType::Get)),
            ))
        }
        (Method::POST, ["key", name, "_invalidatecache"]) => {
            ctx.assert_access(OpType::Rollover, "INVALIDATE_CACHE", Some(name))?;
            ctx.assert_key(name, KeyOp::Management, "INVALIDATE_CACHE")
                .await?;
            ctx.gw.kms.invalidate(name);
            ctx.ok("INVALIDATE_CACHE", Some(name), "");
            Ok(empty(StatusCode::OK))
        }
        (Method::GET, ["key", name]) | (Method::GET, ["key", name, "_metadata"]) => {
            ctx.assert_access(OpType::GetMetadata, "GET_METADATA", Some(name))?;
            let md = ctx.gw.kms.metadata(name).await?;
            ctx.assert_key_with(
                name,
                md.as_ref().map(|m| &m.meta),
                KeyOp::Read,
                "GET_METADATA",
            )?;
            ctx.ok("GET_METADATA", Some(name), "");
            Ok(json_response(
                StatusCode::OK,
                &md.map_or(json!({}), |md| meta_json(name, &md)),
            ))
        }
        (Method::GET, ["key", name, "_currentversion"]) => {
            ctx.assert_access(OpType::Get, "GET_CURRENT_KEY", Some(name))?;
            // One read of the key serves both the key ACL check and the answer.
            let kv = ctx.gw.kms.current(name).await?;
            let meta = kv.as_deref().map(|kv| &kv.meta);
            ctx.assert_key_with(name, meta, KeyOp::Read, "GET_CURRENT_KEY")?;
            ctx.ok("GET_CURRENT_KEY", Some(name), "");
            Ok(json_response(
                StatusCode::OK,
                &kv.map_or(json!({}), |kv| kv_json(&kv, true)),
            ))
        }
        (Method::GET, ["key", name, "_versions"]) => {
            ctx.assert_access(OpType::Get, "GET_KEY_VERSIONS", Some(name))?;
            ctx.assert_key(name, KeyOp::Read, "GET_KEY_VERSIONS")
                .await?;
            let vs = ctx.gw.kms.versions(name).await?;
            ctx.ok("GET_KEY_VERSIONS", Some(name), "");
            Ok(json_response(
                StatusCode::OK,
                &Value::Array(vs.iter().map(|v| kv_json(v, true)).collect()),
            ))
        }
        (Method::GET, ["key", name, "_eek"]) => {
            match query_get(query, "eek_op") {
                None => return Err(KmsError::illegal("Parameter 'eekOp' cannot be null")),
                Some("generate") => {}
                Some(_) => {
                    return Err(KmsError::illegal(
                        "IllegalArgumentException Wrong eek_op value, it must be generate or decrypt",
                    ));
                }
            }
            let num = match query_get(query, "num_keys") {
                None => 1,
                Some(n) => n
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=crate::MAX_NUM_KEYS).contains(n))
                    .ok_or_else(|| {
                        KmsError::illegal(format!(
                            "Parameter 'num_keys' must be a number from 1 to {}",
                            crate::MAX_NUM_KEYS
                        ))
                    })?,
            };
            ctx.assert_access(OpType::GenerateEek, "GENERATE_EEK", Some(name))?;
            let key = ctx.gw.kms.current(name).await?;
            ctx.assert_key_with(
                name,
                key.as_deref().map(|k| &k.meta),
                KeyOp::GenerateEek,
                "GENERATE_EEK",
            )?;
            let key = key.ok_or_else(|| Kms::no_such_key(name))?;
            let eeks = ctx.gw.kms.generate_eeks(name, key, num)?;
            ctx.ok("GENERATE_EEK", Some(name), "");
            Ok(json_response(
                StatusCode::OK,
                &Value::Array(eeks.iter().map(eek_json).collect()),
            ))
        }
        (Method::POST, ["key", name, "_reencryptbatch"]) => reencrypt_batch(ctx, name, body).await,
        (Method::GET, ["keyversion", vn]) => {
            ctx.assert_access(OpType::Get, "GET_KEY_VERSION", None)?;
            let kv = ctx.gw.kms.key_version(vn).await?;
            if let Some(kv) = &kv {
                ctx.assert_key(&kv.name, KeyOp::Read, "GET_KEY_VERSION")
                    .await?;
            }
            let key = split_version_name(vn).map(|(n, _)| n);
            ctx.ok("GET_KEY_VERSION", key, "");
            Ok(json_response(
                StatusCode::OK,
                &kv.map_or(json!({}), |kv| kv_json(&kv, true)),
            ))
        }
        (Method::POST, ["keyversion", vn, "_eek"]) => eek_op(ctx, vn, query, body).await,
        _ => Err(not_found(m, segs)),
    }
}

/// `GET /keys/metadata?key=..&key=..`: at most [`MAX_METADATA_BATCH`] distinct names. A large
/// batch is first checked against one listing of the key names (cached briefly), so names that
/// do not exist cost no keysafe request; each existing key costs at most one (then cached).
async fn keys_metadata(ctx: &Ctx<'_>, query: &[(String, String)]) -> KmsResult<Response> {
    let names: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v.as_str())
        .collect();
    ctx.assert_access(OpType::GetMetadata, "GET_KEYS_METADATA", None)?;
    let distinct: std::collections::HashSet<&str> = names.iter().copied().collect();
    if distinct.len() > MAX_METADATA_BATCH {
        return Err(KmsError::illegal(format!(
            "at most {MAX_METADATA_BATCH} key names per metadata request, got {}",
            distinct.len()
        )));
    }
    let listing = if distinct.len() > 1 {
        Some(ctx.gw.kms.names_snapshot().await?)
    } else {
        None
    };
    let mut found: std::collections::HashMap<&str, Option<Metadata>> =
        std::collections::HashMap::with_capacity(distinct.len());
    for n in &distinct {
        let md = match &listing {
            Some(l) if !l.contains(*n) => None,
            _ => ctx.gw.kms.metadata(n).await?,
        };
        ctx.assert_key_with(
            n,
            md.as_ref().map(|m| &m.meta),
            KeyOp::Read,
            "GET_KEYS_METADATA",
        )?;
        found.insert(n, md);
    }
    let out: Vec<Value> = names
        .iter()
        .map(|n| match found.get(n).and_then(Option::as_ref) {
            Some(md) => meta_json(n, md),
            None => json!({}),
        })
        .collect();
    let extra = if names.len() <= 100 {
        format!("{names:?}")
    } else {
        format!("[{} names]", names.len())
    };
    ctx.ok("GET_KEYS_METADATA", None, &extra);
    Ok(json_response(StatusCode::OK, &Value::Array(out)))
}

async fn create_key(ctx: &Ctx<'_>, headers: &HeaderMap, body: &[u8]) -> KmsResult<Response> {
    let v = parse_body(body)?;
    let name = required(&v, "name")?.to_owned();
    let material = material_field(&v)?;
    ctx.assert_access(OpType::Create, "CREATE_KEY", Some(&name))?;
    if material.is_some() {
        ctx.assert_access(OpType::SetKeyMaterial, "CREATE_KEY", Some(&name))?;
    }
    let length = match v.get("length") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n <= i32::MAX as u32)
                .ok_or_else(|| KmsError::illegal("Parameter 'length' must be a positive int"))?,
        ),
        Some(_) => return Err(KmsError::illegal("Parameter 'length' must be an int")),
    };
    let mut attributes: BTreeMap<String, String> = match v.get("attributes") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(a) => serde_json::from_value(a.clone()).map_err(|_| {
            KmsError::illegal("Parameter 'attributes' must be a map of strings to strings")
        })?,
    };
    if ctx.gw.key_authorization {
        let acls = ctx.gw.acls.get();
        let (u, g) = (&ctx.caller.user, &ctx.caller.groups);
        let ok = match attributes.get("key.acl.name").filter(|a| !a.is_empty()) {
            Some(acl) => acls.key_allowed(acl, u, g, KeyOp::Management),
            None if acls.is_acl_present(&name, KeyOp::Management) => {
                attributes.insert("key.acl.name".into(), name.clone());
                acls.key_allowed(&name, u, g, KeyOp::Management)
            }
            None => false,
        };
        if !ok {
            ctx.gw.audit.unauthorized("CREATE_KEY", Some(&name), u);
            return Err(KmsError::authz(format!(
                "User [{u}] is not authorized to create key !!"
            )));
        }
    }
    let description = str_field(&v, "description")?.map(str::to_owned);
    let user_material = material.is_some();
    let rec = ctx
        .gw
        .kms
        .create(CreateRequest {
            name: name.clone(),
            cipher: str_field(&v, "cipher")?.map(str::to_owned),
            length,
            material,
            description: description.clone(),
            attributes,
        })
        .await?;
    ctx.ok(
        "CREATE_KEY",
        Some(&name),
        &format!(
            "UserProvidedMaterial:{user_material} Description:{}",
            description.as_deref().unwrap_or("null")
        ),
    );
    let mut r = json_response(
        StatusCode::CREATED,
        &kv_json(&rec, ctx.allowed(OpType::Get)),
    );
    let scheme = if ctx.gw.https { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let enc: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    if let Ok(loc) = HeaderValue::from_str(&format!("{scheme}://{host}/kms/v1/key/{enc}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

async fn eek_op(
    ctx: &Ctx<'_>,
    vn: &str,
    query: &[(String, String)],
    body: &[u8],
) -> KmsResult<Response> {
    let op = match query_get(query, "eek_op") {
        None => return Err(KmsError::illegal("Parameter 'eekOp' cannot be null")),
        Some(op @ ("decrypt" | "reencrypt")) => op,
        Some(_) => {
            return Err(KmsError::illegal(
                "IllegalArgumentException Wrong eek_op value, it must be generate or decrypt",
            ));
        }
    };
    let v = parse_body(body)?;
    let name = required(&v, "name")?;
    let iv = b64_field(&v, "iv")?;
    let material = b64_field(&v, "material")?;
    if op == "decrypt" {
        ctx.assert_access(OpType::DecryptEek, "DECRYPT_EEK", Some(name))?;
        let kv = ctx.gw.kms.version_of_key(vn, name).await?;
        ctx.assert_key_with(name, Some(&kv.meta), KeyOp::DecryptEek, "DECRYPT_EEK")?;
        let dek = Kms::decrypt(&kv, &iv, &material)?;
        ctx.ok("DECRYPT_EEK", Some(name), "");
        Ok(json_response(
            StatusCode::OK,
            &json!({"name": name, "versionName": "EK", "material": b64_out(&dek)}),
        ))
    } else {
        ctx.assert_access(OpType::GenerateEek, "REENCRYPT_EEK", Some(name))?;
        let kv = ctx.gw.kms.version_of_key(vn, name).await?;
        ctx.assert_key_with(name, Some(&kv.meta), KeyOp::GenerateEek, "REENCRYPT_EEK")?;
        let e = ctx.gw.kms.reencrypt(&kv, &iv, &material).await?;
        ctx.ok("REENCRYPT_EEK", Some(name), "");
        Ok(json_response(StatusCode::OK, &eek_json(&e)))
    }
}

async fn reencrypt_batch(ctx: &Ctx<'_>, name: &str, body: &[u8]) -> KmsResult<Response> {
    let v = parse_body(body)?;
    let Value::Array(items) = v else {
        return Err(KmsError::illegal("the request body must be a JSON array"));
    };
    ctx.assert_access(OpType::GenerateEek, "REENCRYPT_EEK_BATCH", Some(name))?;
    if items.len() > 10_000 {
        tracing::warn!(key = %name, n = items.len(), "re-encrypt batch larger than Hadoop's 10000");
    }
    let mut parsed = Vec::with_capacity(items.len());
    for it in &items {
        let vn = required(it, "versionName")?;
        if split_version_name(vn).map(|(n, _)| n) != Some(name) {
            return Err(KmsError::illegal(
                "All EncryptedKeys must be under the given key name ".to_owned() + name,
            ));
        }
        let iv = b64_field(it, "iv")?;
        let inner = it
            .get("encryptedKeyVersion")
            .ok_or_else(|| KmsError::illegal("Parameter 'encryptedKeyVersion' cannot be null"))?;
        let material = b64_field(inner, "material")?;
        parsed.push((vn, iv, material));
    }
    ctx.assert_key(name, KeyOp::GenerateEek, "REENCRYPT_EEK_BATCH")
        .await?;
    let mut out = Vec::with_capacity(parsed.len());
    for (vn, iv, material) in parsed {
        let kv = ctx.gw.kms.version_of_key(vn, name).await?;
        out.push(eek_json(&ctx.gw.kms.reencrypt(&kv, &iv, &material).await?));
    }
    ctx.ok(
        "REENCRYPT_EEK_BATCH",
        Some(name),
        &format!("reencrypted {} keys", out.len()),
    );
    Ok(json_response(StatusCode::OK, &Value::Array(out)))
}
