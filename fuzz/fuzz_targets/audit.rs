//! The audit trail's verification and canonical encoding (keysafe-proto `audit`), as
//! `keysafe admin audit verify` runs it over entries and checkpoints that it must not trust.
//!
//! Structure-aware: the fuzzer chooses events and which heads to sign; the target builds the
//! honest chain and signs those checkpoints with a fixed Ed25519 key, then applies one tamper
//! the fuzzer chooses. Properties: the honest chain verifies (also after a JSON round trip, and
//! from any starting entry); the canonical encoding is compact JSON with sorted keys that
//! re-serialises to the same bytes; an edit, deletion, swap or forged checkpoint is reported;
//! a rewritten tail is reported exactly when a signed checkpoint covers it (a rewrite with
//! nothing signed after it is undetectable by design). Raw mode (`\0` first) reads JSON pages.
#![no_main]

use arbitrary::Arbitrary;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use keysafe_proto::audit::{
    AuditCheckpoint, AuditCheckpoints, AuditEntry, AuditEvent, AuditPage, ChainVerifier,
    GENESIS_HASH, canonical_entry, checkpoint_message, key_id, verify,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug, Clone)]
struct Event {
    time: i64,
    node: String,
    request_id: String,
    remote: String,
    client: Option<String>,
    org: Option<String>,
    operation: String,
    target: String,
    version: Option<u64>,
    outcome: String,
}

impl From<Event> for AuditEvent {
    fn from(e: Event) -> Self {
        AuditEvent {
            time: e.time,
            node: e.node,
            request_id: e.request_id,
            remote: e.remote,
            client: e.client,
            org: e.org,
            operation: e.operation,
            target: e.target,
            version: e.version,
            outcome: e.outcome,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Field {
    Time(i64),
    Node(String),
    Client(Option<String>),
    Outcome(String),
    Target(String),
    Version(Option<u64>),
    Seq(u64),
    PrevHash(String),
    Hash(String),
}

#[derive(Arbitrary, Debug)]
enum Tamper {
    None,
    Edit {
        at: u8,
        field: Field,
    },
    Delete {
        at: u8,
    },
    Swap {
        at: u8,
    },
    /// Replace the event at `at` and re-hash every entry from there on (what someone who can
    /// write the database but holds no signing key can do).
    Rewrite {
        at: u8,
        event: Event,
    },
    ForgeCheckpoint {
        at: u8,
        signed_at: i64,
        signature: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum Input {
    Chain {
        events: Vec<Event>,
        /// Entries (indexes, modulo the length) whose head is signed.
        signed: Vec<u8>,
        /// Verify from this entry on (index, modulo the length).
        from: Option<u8>,
        tamper: Tamper,
    },
}

fn key() -> &'static Ed25519KeyPair {
    static K: OnceLock<Ed25519KeyPair> = OnceLock::new();
    K.get_or_init(|| Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a fixed seed"))
}

fn chain(events: &[AuditEvent]) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::with_capacity(events.len());
    for e in events {
        let (s, h) = out
            .last()
            .map_or((0, GENESIS_HASH.to_owned()), |p| (p.seq, p.hash.clone()));
        out.push(AuditEntry::chain(s, &h, e.clone()));
    }
    out
}

fn sign(seq: u64, hash: &str, signed_at: i64) -> AuditCheckpoint {
    let pk = key().public_key().as_ref();
    let kid = key_id(pk);
    let sig = key().sign(&checkpoint_message(seq, hash, signed_at, &kid));
    AuditCheckpoint {
        seq,
        hash: hash.to_owned(),
        signed_at,
        key_id: kid,
        signature: hex::encode(sig.as_ref()),
    }
}

fn check_canonical(e: &AuditEntry) {
    let bytes = canonical_entry(e.seq, &e.prev_hash, &e.event);
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("canonical JSON parses");
    let map = v.as_object().expect("an object");
    let keys: Vec<&String> = map.keys().collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys are sorted");
    assert_eq!(map.len(), 12);
    // serde_json's map is sorted, so re-serialising the value must give the same bytes.
    assert_eq!(serde_json::to_vec(&v).expect("serialises"), bytes);
}

fn broken(entries: &[AuditEntry], cps: &[AuditCheckpoint], from: Option<u64>) -> bool {
    let pk = key().public_key().as_ref();
    let r = verify(entries, cps, pk, from);
    // The streaming verifier is what `verify` is made of; feeding it gives the same report.
    let mut v = ChainVerifier::new(cps, pk, from);
    for e in entries {
        v.feed(e);
    }
    assert_eq!(v.finish(), r);
    r.broken.is_some()
}

/// Raw input: an entries page (`GET /v1/admin/audit/entries`), a blank line, a checkpoints
/// page (`GET /v1/admin/audit/checkpoints`), verified against the fixed key.
fn raw(data: &[u8]) {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(data.len());
    let (page, checkpoints) = data.split_at(split);
    let pk = key().public_key().as_ref();
    let entries = serde_json::from_slice::<AuditPage>(page)
        .map(|p| p.entries)
        .unwrap_or_default();
    let cps = serde_json::from_slice::<AuditCheckpoints>(checkpoints.get(2..).unwrap_or(&[]))
        .map(|c| c.checkpoints)
        .unwrap_or_default();
    let r = verify(&entries, &cps, pk, None);
    assert_eq!(r.entries, entries.len() as u64);
    for e in &entries {
        check_canonical(e);
        let _ = e.computed_hash();
    }
}

fuzz_target!(|data: &[u8]| {
    let input = match keysafe_fuzz::raw_or::<Input>(data) {
        Ok(rest) => return raw(rest),
        Err(None) => return,
        Err(Some(i)) => i,
    };
    match input {
        Input::Chain {
            events,
            signed,
            from,
            tamper,
        } => {
            if events.is_empty() || events.len() > 32 {
                return;
            }
            let events: Vec<AuditEvent> = events.into_iter().map(Into::into).collect();
            let honest = chain(&events);
            let n = honest.len();
            for e in &honest {
                check_canonical(e);
                assert_eq!(e.computed_hash(), e.hash);
            }
            let mut cps: Vec<AuditCheckpoint> = signed
                .iter()
                .take(8)
                .map(|&i| {
                    let e = &honest[usize::from(i) % n];
                    sign(e.seq, &e.hash, 1_700_000_000_000 + i64::from(i))
                })
                .collect();
            cps.sort_by_key(|c| c.seq);
            let top_signed = cps.iter().map(|c| c.seq).max();

            // The honest chain verifies, whole and from any entry on.
            let pk = key().public_key().as_ref();
            let r = verify(&honest, &cps, pk, None);
            assert_eq!(r.broken, None, "honest chain");
            assert_eq!(r.signed_up_to, top_signed);
            if let Some(f) = from {
                let i = usize::from(f) % n;
                assert!(
                    !broken(&honest[i..], &cps, Some(honest[i].seq)),
                    "suffix from {i}"
                );
            }
            // ... and after the JSON round trip a verifier reads it through.
            let text = serde_json::to_vec(&AuditPage {
                entries: honest.clone(),
            })
            .expect("serialises");
            let back: AuditPage = serde_json::from_slice(&text).expect("parses");
            assert_eq!(back.entries, honest);

            let mut t = honest.clone();
            match tamper {
                Tamper::None => {}
                Tamper::Edit { at, field } => {
                    let i = usize::from(at) % n;
                    let e = &mut t[i];
                    match field {
                        Field::Time(v) => e.event.time = v,
                        Field::Node(v) => e.event.node = v,
                        Field::Client(v) => e.event.client = v,
                        Field::Outcome(v) => e.event.outcome = v,
                        Field::Target(v) => e.event.target = v,
                        Field::Version(v) => e.event.version = v,
                        Field::Seq(v) => e.seq = v,
                        Field::PrevHash(v) => e.prev_hash = v,
                        Field::Hash(v) => e.hash = v,
                    }
                    if t[i] != honest[i] {
                        assert!(broken(&t, &cps, None), "edit of entry {i} not reported");
                    }
                }
                Tamper::Delete { at } => {
                    let i = usize::from(at) % n;
                    let seq = t.remove(i).seq;
                    let visible = i + 1 < n || top_signed.is_some_and(|s| s >= seq);
                    if visible {
                        assert!(broken(&t, &cps, None), "deletion of entry {i} not reported");
                    }
                }
                Tamper::Swap { at } => {
                    let i = usize::from(at) % n;
                    if i + 1 < n {
                        t.swap(i, i + 1);
                        assert!(broken(&t, &cps, None), "swap at {i} not reported");
                    }
                }
                Tamper::Rewrite { at, event } => {
                    let i = usize::from(at) % n;
                    let mut evs = events.clone();
                    evs[i] = event.into();
                    if evs[i] != events[i] {
                        let rewritten = chain(&evs);
                        let seq = rewritten[i].seq;
                        let covered = top_signed.is_some_and(|s| s >= seq);
                        assert_eq!(
                            broken(&rewritten, &cps, None),
                            covered,
                            "a rewrite from entry {i} is reported exactly when a checkpoint covers it"
                        );
                    }
                }
                Tamper::ForgeCheckpoint {
                    at,
                    signed_at,
                    signature,
                } => {
                    if !cps.is_empty() {
                        let i = usize::from(at) % cps.len();
                        let before = cps[i].clone();
                        cps[i].signed_at = signed_at;
                        if !signature.is_empty() {
                            cps[i].signature = hex::encode(&signature);
                        }
                        if cps[i] != before {
                            assert!(broken(&t, &cps, None), "forged checkpoint not reported");
                        }
                    }
                }
            }
        }
    }
});
