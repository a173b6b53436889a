//! Sequenced tokens as the server judges them (keysafe-core `service::tokens`, through
//! `Service::authenticate`) over a real SQLite store and a manual clock. Each input is a
//! session of one client: after an administrator's token reset, an honest client presents
//! the newest token it received (sometimes losing the answer), time moves (forwards and
//! back), two requests race, an attacker presents made-up or old tokens, an administrator
//! resets. Properties (ADR 0006):
//! - an honest client is never refused and never locked, whatever answers it lost and however
//!   time moved, as long as nobody else presented its tokens since the last reset;
//! - a request without a token is refused and changes nothing;
//! - a token the server never issued is refused and locks the client (a suspected clone), and
//!   a locked client is refused whatever it presents, until a reset;
//! - issued counters never go back.
#![no_main]

use arbitrary::Arbitrary;
use keysafe_core::service::ClientAction;
use keysafe_core::{CoreError, Limits};
use keysafe_proto::ClientFingerprint;
use keysafe_proto::api::ClientState;
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::Duration;

const HOUR: i64 = 3_600_000;

#[derive(Arbitrary, Debug)]
enum Action {
    /// The honest client presents the newest token it has; its answer may be lost.
    Honest {
        lose_answer: bool,
    },
    /// Two honest requests at once with the same token.
    Race,
    /// Milliseconds (may be negative: clocks go back).
    Advance(i32),
    NoToken,
    /// An attacker presents a token of their own making.
    Forged(String),
    /// An attacker presents a token this client was issued earlier (index into the history).
    Replay(u8),
    Reset,
}

struct Fixture {
    domain: keysafe_fuzz::Domain,
    fp: ClientFingerprint,
    /// The honest client's newest token, carried from one input to the next.
    held: Mutex<String>,
    /// Time at the start of the next input (one hour later each time).
    epoch: Mutex<i64>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        keysafe_fuzz::runtime().block_on(async {
            let limits = Limits {
                token_rotation: Duration::from_secs(10),
                token_grace: Duration::from_secs(5),
                ..Limits::default()
            };
            let domain = keysafe_fuzz::Domain::new(limits).await;
            let (fp, held) = domain.register("acme", &"c1".repeat(32)).await;
            let epoch = domain.clock.get();
            Fixture {
                domain,
                fp,
                held: Mutex::new(held),
                epoch: Mutex::new(epoch),
            }
        })
    })
}

fn counter(t: &str) -> Option<u64> {
    t.split_once('.').and_then(|(c, _)| c.parse().ok())
}

struct Session<'a> {
    f: &'a Fixture,
    held: String,
    history: Vec<String>,
    reset_pending: bool,
    tainted: bool,
    top_counter: u64,
}

impl Session<'_> {
    async fn locked(&self) -> bool {
        let rec = self
            .f
            .domain
            .service
            .store()
            .get_client(&self.f.fp)
            .await
            .expect("the store answers")
            .expect("the client exists");
        rec.state == ClientState::SuspectedClone
    }

    async fn present(&mut self, token: Option<&str>) -> Result<Option<String>, CoreError> {
        let r = self
            .f
            .domain
            .service
            .authenticate(Some(&self.f.fp), token)
            .await;
        let r = r.map(|a| a.issued_token.map(|t| t.0));
        if let Ok(Some(t)) = &r {
            let c = counter(t).expect("an issued token has a counter");
            assert!(
                c >= self.top_counter,
                "issued counter {c} after {}",
                self.top_counter
            );
            self.top_counter = c;
            self.history.push(t.clone());
        }
        if r.is_ok() {
            self.reset_pending = false;
        }
        r
    }

    async fn reset(&mut self) {
        self.f
            .domain
            .service
            .client_action(&self.f.domain.admin, &self.f.fp, ClientAction::ResetToken)
            .await
            .expect("a reset");
        self.reset_pending = true;
        self.tainted = false;
    }
}

fuzz_target!(|actions: Vec<Action>| {
    let f = fixture();
    keysafe_fuzz::runtime().block_on(async {
        let clock = &f.domain.clock;
        {
            let mut e = f.epoch.lock().expect("not poisoned");
            *e += HOUR;
            clock.set(*e);
        }
        let held = f.held.lock().expect("not poisoned").clone();
        let mut s = Session {
            f,
            top_counter: counter(&held).unwrap_or(0),
            held,
            history: Vec::new(),
            reset_pending: false,
            tainted: false,
        };
        // Start from a known state: reset, then the honest client's first request.
        s.reset().await;
        let first = s.held.clone();
        s.history.push(first.clone());
        if let Some(t) = s
            .present(Some(&first))
            .await
            .expect("after a reset anything passes")
        {
            s.held = t;
        }
        for a in actions.into_iter().take(12) {
            let was_locked = s.locked().await;
            match a {
                Action::Honest { lose_answer } => {
                    let held = s.held.clone();
                    let r = s.present(Some(&held)).await;
                    if !s.tainted {
                        assert!(r.is_ok(), "an honest client was refused: {r:?}");
                    }
                    if let Ok(Some(t)) = r
                        && !lose_answer
                    {
                        s.held = t;
                    }
                }
                Action::Race => {
                    let held = s.held.clone();
                    let svc = &f.domain.service;
                    let (a, b) = tokio::join!(
                        svc.authenticate(Some(&f.fp), Some(&held)),
                        svc.authenticate(Some(&f.fp), Some(&held)),
                    );
                    if !s.tainted {
                        assert!(a.is_ok() && b.is_ok(), "a race refused: {a:?} {b:?}");
                    }
                    let issued: Vec<String> = [a, b]
                        .into_iter()
                        .filter_map(|r| r.ok().and_then(|x| x.issued_token).map(|t| t.0))
                        .collect();
                    if let Some(t) = issued.iter().max_by_key(|t| counter(t)) {
                        s.held = t.clone();
                        s.top_counter = s.top_counter.max(counter(t).unwrap_or(0));
                    }
                    s.history.extend(issued);
                    s.reset_pending = false;
                }
                Action::Advance(ms) => clock.set(clock.get() + i64::from(ms)),
                Action::NoToken => {
                    let pending = s.reset_pending;
                    let r = s.present(None).await;
                    if pending {
                        // Right after a reset the first request is issued a token whatever it
                        // presents (none included), so the client that sent nothing now holds
                        // the sequence: the honest one's next token is not the current one.
                        s.tainted = true;
                    } else {
                        assert!(r.is_err(), "accepted without a token");
                        assert_eq!(
                            s.locked().await,
                            was_locked,
                            "a missing token changed the lock"
                        );
                    }
                }
                Action::Forged(t) => {
                    let pending = s.reset_pending;
                    let r = s.present(Some(&t)).await;
                    s.tainted = true;
                    if !pending && !s.history.contains(&t) && t != s.held {
                        assert!(r.is_err(), "a forged token was accepted");
                        assert!(s.locked().await, "a forged token did not lock the client");
                    }
                    if pending && r.is_ok() {
                        // After a reset the first request's token, whatever it is, counts as
                        // the one its fresh token replaced: requests in flight with it pass
                        // (and lost answers are re-issued) for the grace window, by design.
                        s.history.push(t.clone());
                    }
                }
                Action::Replay(i) => {
                    if !s.history.is_empty() {
                        let t = s.history[usize::from(i) % s.history.len()].clone();
                        let _ = s.present(Some(&t)).await;
                        s.tainted = true;
                    }
                }
                Action::Reset => s.reset().await,
            }
            if was_locked && !s.reset_pending {
                assert!(s.locked().await, "a lock was lifted without a reset");
            }
            if s.locked().await {
                let held = s.held.clone();
                let r = f
                    .domain
                    .service
                    .authenticate(Some(&f.fp), Some(&held))
                    .await;
                assert!(r.is_err(), "a locked client was accepted");
            }
        }
        *f.held.lock().expect("not poisoned") = s.held.clone();
    });
});
