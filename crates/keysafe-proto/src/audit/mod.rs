//! The audit trail's wire format and its verification. Entries form a hash chain: each entry's
//! `hash` is SHA-256 over a domain prefix and the canonical JSON of every other field, including
//! `prev_hash` (the hash of the entry before it). Checkpoints sign a (seq, hash) head with
//! Ed25519. Verification lives here, on the client side of the wire, so that anyone holding the
//! entries, the checkpoints and the public key can check them without trusting the server.
//! docs/audit.md defines the encoding precisely (and shows how to check it with Python).

use serde::{Deserialize, Serialize};

mod canonical;

/// Prefix hashed before an entry's canonical JSON.
pub const ENTRY_DOMAIN: &[u8] = b"keysafe-audit-entry-v1\n";
/// Prefix signed before a checkpoint's canonical JSON.
pub const CHECKPOINT_DOMAIN: &[u8] = b"keysafe-audit-checkpoint-v1\n";
/// `prev_hash` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The only checkpoint signature algorithm.
pub const CHECKPOINT_ALGORITHM: &str = "ed25519";

/// What one request did. Everything but the chain fields (`seq`, `prev_hash`, `hash`) is decided
/// before the entry reaches the writer. Never holds a payload, a key, a secret or a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Unix milliseconds (UTC) when the request arrived.
    pub time: i64,
    /// The node that served the request (`audit.node`, default the server's hostname).
    pub node: String,
    pub request_id: String,
    /// Source address `IP:port`.
    pub remote: String,
    /// The caller's certificate fingerprint; `None` when no certificate was presented.
    pub client: Option<String>,
    /// The caller's organisation, once it authenticated.
    pub org: Option<String>,
    /// `METHOD ROUTE`, for example `PUT /v1/deposits/{*path}`; `-` for no route.
    pub operation: String,
    /// The request path without its query (names, fingerprints: never secrets), capped in length.
    pub target: String,
    /// The deposit version read or written, when the operation touched one.
    pub version: Option<u64>,
    /// `ok`, or the stable error code of the answer.
    pub outcome: String,
}

/// An entry as stored and exported: the event plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    #[serde(flatten)]
    pub event: AuditEvent,
}

pub use canonical::{canonical_entry, entry_hash};

impl AuditEntry {
    /// Chains `event` after an entry whose seq and hash are given (`0` and [`GENESIS_HASH`]
    /// before the first).
    pub fn chain(prev_seq: u64, prev_hash: &str, event: AuditEvent) -> Self {
        let seq = prev_seq.saturating_add(1);
        let hash = entry_hash(seq, prev_hash, &event);
        Self {
            seq,
            prev_hash: prev_hash.to_owned(),
            hash,
            event,
        }
    }

    /// The hash this entry's contents call for.
    pub fn computed_hash(&self) -> String {
        entry_hash(self.seq, &self.prev_hash, &self.event)
    }
}

/// A signed head of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditCheckpoint {
    /// The last entry covered.
    pub seq: u64,
    /// That entry's hash.
    pub hash: String,
    /// Unix milliseconds when it was signed.
    pub signed_at: i64,
    /// Hex SHA-256 of the raw 32-byte public key that signed it.
    pub key_id: String,
    /// Hex Ed25519 signature over `CHECKPOINT_DOMAIN || canonical_checkpoint`.
    pub signature: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CanonicalCheckpoint<'a> {
    hash: &'a str,
    key_id: &'a str,
    seq: u64,
    signed_at: i64,
}

/// The signed message of a checkpoint: the domain prefix and the canonical JSON of
/// `{hash, key_id, seq, signed_at}`.
pub fn checkpoint_message(seq: u64, hash: &str, signed_at: i64, key_id: &str) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend(
        serde_json::to_vec(&CanonicalCheckpoint {
            hash,
            key_id,
            seq,
            signed_at,
        })
        .unwrap_or_default(),
    );
    m
}

/// Hex SHA-256 of a raw Ed25519 public key.
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_key).as_ref())
}

/// `GET /v1/audit/public-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPublicKey {
    /// Always `ed25519`.
    pub algorithm: String,
    /// Hex of the raw 32-byte public key.
    pub public_key: String,
    /// Hex SHA-256 of the raw public key (what checkpoints name).
    pub key_id: String,
    /// The same key as a PEM SubjectPublicKeyInfo, for `openssl` and `cryptography`.
    pub pem: String,
}

/// `GET /v1/admin/audit/entries`: a page of entries in seq order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
}

/// `GET /v1/admin/audit/checkpoints`: every checkpoint at or after `from`, in seq order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditCheckpoints {
    pub checkpoints: Vec<AuditCheckpoint>,
}

/// `POST /v1/admin/audit/prune`: delete the entries up to the signed checkpoint at `through`,
/// after archiving them (the archive's SHA-256 goes into the entry that records the prune).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditPruneRequest {
    pub through: u64,
    pub archive_sha256: String,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPruneResponse {
    /// Entries up to this one are gone; the checkpoint at it stays as the anchor.
    pub through: u64,
    /// How many entries were deleted.
    pub deleted: u64,
}

/// Where the chain breaks, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditBreak {
    /// The first entry that does not verify (for a truncated tail: the first missing one).
    pub seq: u64,
    /// `edited`, `deleted`, `inserted`, `reordered`, `truncated`, `checkpoint_mismatch`,
    /// `bad_signature`.
    pub kind: &'static str,
    pub detail: String,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditReport {
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub entries: u64,
    pub checkpoints: u64,
    /// The highest entry covered by a verified signature.
    pub signed_up_to: Option<u64>,
    /// Entries up to this one were pruned (archived, then deleted): the chain was verified
    /// from the signed checkpoint at this entry, and a signed prune record accounts for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned_through: Option<u64>,
    pub broken: Option<AuditBreak>,
}

/// The path an audit prune is recorded under; its entry's target adds which entries it removed
/// and the SHA-256 of the archive that holds them ([`prune_target`]).
pub const PRUNE_PATH: &str = "/v1/admin/audit/prune";

/// The target of the entry that records a prune of the entries up to `through`.
pub fn prune_target(through: u64, archive_sha256: &str) -> String {
    format!("{PRUNE_PATH}?through={through}&archive_sha256={archive_sha256}")
}

/// The `through` of an entry that records a successful prune, if it is one.
fn pruned_through(e: &AuditEntry) -> Option<u64> {
    if e.event.outcome != "ok" {
        return None;
    }
    let query = e
        .event
        .target
        .strip_prefix(PRUNE_PATH)?
        .strip_prefix("?through=")?;
    query.split('&').next()?.parse().ok()
}

/// Whether a checkpoint carries a valid signature of `public_key`.
pub fn verify_signature(c: &AuditCheckpoint, public_key: &[u8]) -> bool {
    let Ok(sig) = hex::decode(&c.signature) else {
        return false;
    };
    let msg = checkpoint_message(c.seq, &c.hash, c.signed_at, &c.key_id);
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public_key)
        .verify(&msg, &sig)
        .is_ok()
}

/// Whether an entry's contents were hashed for a neighbouring position (a swapped pair).
fn moved_here(e: &AuditEntry) -> bool {
    [e.seq.saturating_sub(1), e.seq.saturating_add(1)]
        .iter()
        .any(|&s| s != e.seq && entry_hash(s, &e.prev_hash, &e.event) == e.hash)
}

/// Checks a run of entries (ascending by seq, as stored) and the checkpoints against the public
/// key; see [`ChainVerifier`]. Holds everything in memory: for long trails, feed a
/// `ChainVerifier` page by page instead.
pub fn verify(
    entries: &[AuditEntry],
    checkpoints: &[AuditCheckpoint],
    public_key: &[u8],
    from: Option<u64>,
) -> AuditReport {
    let mut v = ChainVerifier::new(checkpoints, public_key, from);
    for e in entries {
        v.feed(e);
    }
    v.finish()
}

/// Verifies a chain as it streams past, in constant memory (plus the checkpoints). With `from`,
/// the first entry's `prev_hash` is taken on trust (it belongs to an entry before the range).
/// Reports the first entry where the chain breaks:
///
/// - an entry whose hash does not match its contents: `edited` (or `reordered` when its
///   contents are those hashed for a neighbouring position);
/// - a gap in seq: `deleted`;
/// - an entry that does not follow its predecessor but shares that predecessor's
///   `prev_hash`: `inserted` (the predecessor is the intruder);
/// - a checkpoint past the last entry: `truncated`;
/// - a checkpoint whose hash differs from its entry's: `checkpoint_mismatch`;
/// - a checkpoint not signed by the key: `bad_signature`.
///
/// A trail whose first entries were pruned (without `from`) verifies from the signed checkpoint
/// just before its first entry, provided a prune record that names that checkpoint is in the
/// chain and covered by a later signed checkpoint; without both, the missing entries are
/// `deleted`.
#[derive(Debug)]
pub struct ChainVerifier {
    start: u64,
    /// The last entry fed: (seq, hash, prev_hash).
    prev: Option<(u64, String, String)>,
    report: AuditReport,
    /// Checkpoints with a valid signature: seq -> signed hash.
    wanted: std::collections::BTreeMap<u64, String>,
    /// Hashes of the entries at those seqs, as fed.
    found: std::collections::BTreeMap<u64, String>,
    breaks: Vec<AuditBreak>,
    /// The chain broke: later entries are only looked at for checkpoints.
    chain_broken: bool,
    /// Every checkpoint with a valid signature, before `start` too: the anchors a pruned
    /// trail may start from.
    anchors: std::collections::BTreeMap<u64, String>,
    /// Whether `from` was given (a range, not the whole trail).
    ranged: bool,
    /// Prune records fed: the `through` they name -> their own seq.
    prunes: std::collections::BTreeMap<u64, u64>,
}

impl ChainVerifier {
    pub fn new(checkpoints: &[AuditCheckpoint], public_key: &[u8], from: Option<u64>) -> Self {
        let start = from.unwrap_or(1).max(1);
        let mut breaks = Vec::new();
        let mut wanted = std::collections::BTreeMap::new();
        let mut anchors = std::collections::BTreeMap::new();
        let mut n = 0;
        let kid = key_id(public_key);
        for c in checkpoints {
            let valid = c.key_id == kid && verify_signature(c, public_key);
            if valid {
                anchors.insert(c.seq, c.hash.clone());
            }
            if c.seq < start {
                continue;
            }
            n += 1;
            if !valid {
                breaks.push(AuditBreak {
                    seq: c.seq,
                    kind: "bad_signature",
                    detail: format!(
                        "the checkpoint at entry {} is not signed by this key",
                        c.seq
                    ),
                });
                continue;
            }
            wanted.insert(c.seq, c.hash.clone());
        }
        Self {
            start,
            prev: None,
            report: AuditReport {
                first_seq: None,
                last_seq: None,
                entries: 0,
                checkpoints: n,
                signed_up_to: None,
                pruned_through: None,
                broken: None,
            },
            wanted,
            found: std::collections::BTreeMap::new(),
            breaks,
            chain_broken: false,
            anchors,
            ranged: from.is_some(),
            prunes: std::collections::BTreeMap::new(),
        }
    }

    fn broke(&mut self, seq: u64, kind: &'static str, detail: String) {
        self.breaks.push(AuditBreak { seq, kind, detail });
        self.chain_broken = true;
    }

    /// Takes the next entry (in stored order).
    pub fn feed(&mut self, e: &AuditEntry) {
        self.report.entries += 1;
        self.report.first_seq.get_or_insert(e.seq);
        self.report.last_seq = Some(e.seq);
        if self.wanted.contains_key(&e.seq) {
            self.found.insert(e.seq, e.hash.clone());
        }
        if let Some(through) = pruned_through(e) {
            self.prunes.entry(through).or_insert(e.seq);
        }
        if !self.chain_broken {
            self.check_link(e);
        }
        if !self.chain_broken && e.computed_hash() != e.hash {
            let kind = if moved_here(e) { "reordered" } else { "edited" };
            self.broke(
                e.seq,
                kind,
                format!("entry {} does not match its hash", e.seq),
            );
        }
        self.prev = Some((e.seq, e.hash.clone(), e.prev_hash.clone()));
    }

    fn check_link(&mut self, e: &AuditEntry) {
        let Some((pseq, phash, pprev)) = self.prev.clone() else {
            let anchor = e.seq.checked_sub(1).and_then(|s| self.anchors.get(&s));
            if e.seq > self.start && !self.ranged && anchor == Some(&e.prev_hash) {
                // Pruned up to a signed checkpoint: `finish` looks for the prune record.
                self.report.pruned_through = Some(e.seq - 1);
            } else if e.seq > self.start {
                self.broke(
                    self.start,
                    "deleted",
                    format!("entries {}..{} are missing", self.start, e.seq - 1),
                );
            } else if e.seq == 1 && e.prev_hash != GENESIS_HASH {
                self.broke(
                    1,
                    "edited",
                    "the first entry does not start the chain".into(),
                );
            }
            return;
        };
        if e.seq != pseq.saturating_add(1) {
            let detail = if e.seq > pseq {
                format!("entries {}..{} are missing", pseq + 1, e.seq - 1)
            } else {
                format!("entry {} follows entry {pseq}", e.seq)
            };
            self.broke(pseq.saturating_add(1), "deleted", detail);
        } else if e.prev_hash != phash {
            if e.prev_hash == pprev {
                self.broke(
                    pseq,
                    "inserted",
                    format!(
                        "entry {pseq} was inserted: entry {} follows the entry before it",
                        e.seq
                    ),
                );
            } else {
                let kind = if moved_here(e) {
                    "reordered"
                } else {
                    "deleted"
                };
                self.broke(
                    e.seq,
                    kind,
                    format!(
                        "entry {} does not follow entry {pseq} (prev_hash differs)",
                        e.seq
                    ),
                );
            }
        }
    }

    /// The verdict, once every entry was fed.
    pub fn finish(mut self) -> AuditReport {
        let last = self.report.last_seq.unwrap_or(self.start.saturating_sub(1));
        for (seq, hash) in &self.wanted {
            if *seq > last {
                self.breaks.push(AuditBreak {
                    seq: last.saturating_add(1),
                    kind: "truncated",
                    detail: format!(
                        "entries {}..{seq} are missing: a signed checkpoint covers entry {seq}",
                        last.saturating_add(1)
                    ),
                });
                continue;
            }
            match self.found.get(seq) {
                Some(h) if h == hash => {
                    self.report.signed_up_to =
                        Some(self.report.signed_up_to.unwrap_or(0).max(*seq));
                }
                Some(_) => self.breaks.push(AuditBreak {
                    seq: *seq,
                    kind: "checkpoint_mismatch",
                    detail: format!(
                        "entry {seq} is not the one the checkpoint signed: the chain was \
                         rewritten at or before it"
                    ),
                }),
                None => {}
            }
        }
        if let Some(through) = self.report.pruned_through {
            let recorded = self.prunes.get(&through);
            let signed = self.report.signed_up_to.unwrap_or(0);
            if recorded.is_none_or(|seq| *seq > signed) {
                let why = match recorded {
                    Some(seq) => format!(
                        "the prune recorded at entry {seq} is not covered by a signed checkpoint"
                    ),
                    None => "no prune of them is recorded".into(),
                };
                self.breaks.push(AuditBreak {
                    seq: 1,
                    kind: "deleted",
                    detail: format!("entries 1..{through} are missing and {why}"),
                });
            }
        }
        self.report.broken = self.breaks.into_iter().min_by_key(|b| b.seq);
        self.report
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(super) fn event(n: u64) -> AuditEvent {
        AuditEvent {
            time: 1_700_000_000_000 + n as i64,
            node: "n1".into(),
            request_id: format!("r{n}"),
            remote: "127.0.0.1:5".into(),
            client: Some("ab".into()),
            org: None,
            operation: "GET /v1/whoami".into(),
            target: "/v1/whoami".into(),
            version: None,
            outcome: "ok".into(),
        }
    }

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 1..=n {
            let (s, h) = out
                .last()
                .map(|e| (e.seq, e.hash.clone()))
                .unwrap_or((0, GENESIS_HASH.into()));
            out.push(AuditEntry::chain(s, &h, event(i)));
        }
        out
    }

    #[test]
    fn untouched_chain_verifies_and_edits_break_it() {
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
        use aws_lc_rs::signature::KeyPair;
        let pk = key.public_key().as_ref().to_vec();
        let entries = chain(5);
        let kid = key_id(&pk);
        let sig = key.sign(&checkpoint_message(5, &entries[4].hash, 1, &kid));
        let cp = AuditCheckpoint {
            seq: 5,
            hash: entries[4].hash.clone(),
            signed_at: 1,
            key_id: kid,
            signature: hex::encode(sig.as_ref()),
        };
        let r = verify(&entries, std::slice::from_ref(&cp), &pk, None);
        assert_eq!(r.broken, None);
        assert_eq!(r.signed_up_to, Some(5));

        let mut edited = entries.clone();
        edited[2].event.outcome = "forbidden".into();
        assert_eq!(
            verify(&edited, &[], &pk, None)
                .broken
                .map(|b| (b.seq, b.kind)),
            Some((3, "edited"))
        );
        let mut truncated = entries.clone();
        truncated.truncate(3);
        assert_eq!(
            verify(&truncated, std::slice::from_ref(&cp), &pk, None)
                .broken
                .map(|b| (b.seq, b.kind)),
            Some((4, "truncated"))
        );
        let mut forged = cp.clone();
        forged.signed_at = 2;
        assert_eq!(
            verify(&entries, &[forged], &pk, None)
                .broken
                .map(|b| b.kind),
            Some("bad_signature")
        );
    }

    /// A chain of `n` entries where entry `prune_at` records a prune through `through`.
    fn chain_with_prune(n: u64, prune_at: u64, through: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 1..=n {
            let (s, h) = out
                .last()
                .map(|e| (e.seq, e.hash.clone()))
                .unwrap_or((0, GENESIS_HASH.into()));
            let mut ev = event(i);
            if i == prune_at {
                ev.operation = format!("POST {PRUNE_PATH}");
                ev.target = prune_target(through, "ab12");
            }
            out.push(AuditEntry::chain(s, &h, ev));
        }
        out
    }

    fn signed(key: &aws_lc_rs::signature::Ed25519KeyPair, e: &AuditEntry) -> AuditCheckpoint {
        use aws_lc_rs::signature::KeyPair;
        let kid = key_id(key.public_key().as_ref());
        let sig = key.sign(&checkpoint_message(e.seq, &e.hash, 1, &kid));
        AuditCheckpoint {
            seq: e.seq,
            hash: e.hash.clone(),
            signed_at: 1,
            key_id: kid,
            signature: hex::encode(sig.as_ref()),
        }
    }

    #[test]
    fn a_pruned_trail_verifies_from_its_anchor_only_with_a_signed_prune_record() {
        use aws_lc_rs::signature::KeyPair;
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
        let pk = key.public_key().as_ref().to_vec();
        // Entries 1..=4 pruned through the checkpoint at 4; the prune is recorded at 7 and
        // signed by the checkpoint at 8.
        let all = chain_with_prune(10, 7, 4);
        let cps = vec![signed(&key, &all[3]), signed(&key, &all[7])];
        let kept = &all[4..];
        let r = verify(kept, &cps, &pk, None);
        assert_eq!(r.broken, None, "{r:?}");
        assert_eq!(r.pruned_through, Some(4));
        assert_eq!(r.signed_up_to, Some(8));

        // The same deletion with no prune record: deleted.
        let plain = chain(10);
        let cps_plain = vec![signed(&key, &plain[3]), signed(&key, &plain[7])];
        let r = verify(&plain[4..], &cps_plain, &pk, None);
        assert_eq!(r.broken.as_ref().map(|b| b.kind), Some("deleted"), "{r:?}");

        // A record that no checkpoint covers yet (appended by whoever deleted the entries,
        // after the last signature): deleted.
        let r = verify(kept, &cps[..1], &pk, None);
        let b = r.broken.unwrap();
        assert_eq!(b.kind, "deleted");
        assert!(b.detail.contains("not covered"), "{}", b.detail);

        // A record naming another checkpoint than the one the trail starts after: deleted.
        let other = chain_with_prune(10, 7, 3);
        let cps_other = vec![signed(&key, &other[3]), signed(&key, &other[7])];
        let r = verify(&other[4..], &cps_other, &pk, None);
        assert_eq!(r.broken.map(|b| b.kind), Some("deleted"));

        // More entries deleted than the prune removed (through the checkpoint at 8, with the
        // record itself): the first kept entry follows no recorded prune.
        let r = verify(&all[8..], &cps, &pk, None);
        assert_eq!(r.broken.map(|b| b.kind), Some("deleted"));

        // No anchor: the checkpoint at 4 is missing (or forged), so nothing vouches for the
        // first kept entry's predecessor.
        let r = verify(kept, &cps[1..], &pk, None);
        assert_eq!(r.broken.map(|b| b.kind), Some("deleted"));
        let mut forged = cps.clone();
        forged[0].signed_at = 2;
        let r = verify(kept, &forged, &pk, None);
        assert!(r.broken.is_some());

        // A failed prune request is no record.
        let mut failed = all.clone();
        failed[6].event.outcome = "error".into();
        let mut rechained: Vec<AuditEntry> = Vec::new();
        for e in &failed {
            let (s, h) = rechained
                .last()
                .map(|e| (e.seq, e.hash.clone()))
                .unwrap_or((0, GENESIS_HASH.into()));
            rechained.push(AuditEntry::chain(s, &h, e.event.clone()));
        }
        let cps_failed = vec![signed(&key, &rechained[3]), signed(&key, &rechained[7])];
        let r = verify(&rechained[4..], &cps_failed, &pk, None);
        assert_eq!(r.broken.map(|b| b.kind), Some("deleted"));

        // With `from`, a range verifies as before (the first prev_hash on trust).
        let r = verify(kept, &cps, &pk, Some(5));
        assert_eq!(r.broken, None);
        assert_eq!(r.pruned_through, None);
    }
}
