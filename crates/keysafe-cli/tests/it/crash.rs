//! Crash consistency through the real binary: writers put concurrently into a `keysafe serve`
//! child that is killed with SIGKILL at a random moment, again and again. After every restart
//! each acknowledged write reads back exactly (its version, its bytes), and at the end the audit
//! chain verifies with `keysafe admin audit verify`. Half the writers put to one shared deposit
//! (its versions queued behind each other), the others each to keys of their own. `KEYSAFE_CRASH_CYCLES` sets the number of
//! cycles (default 20); `KEYSAFE_CRASH_SEED` replays a run.

use crate::edges::served;
use crate::{keysafe, ok, run, spawn_serve_at, wait_healthy};
use keysafe_client::client::{ClientOptions, FailoverOptions};
use keysafe_client::{ClientHome, KeysafeClient, Precondition};
use keysafe_proto::{DepositName, DepositVersion};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// xorshift64*: the moments of the kills, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

type Acked = Arc<Mutex<Vec<(DepositName, DepositVersion, Vec<u8>)>>>;

const WRITERS: usize = 8;
/// Keys per writer: each key gets many versions, so old versions are checked too.
const KEYS: u64 = 4;

async fn verify(client: &KeysafeClient, acked: &[(DepositName, DepositVersion, Vec<u8>)]) {
    for (name, version, value) in acked {
        let got = client
            .get(name, Some(*version))
            .await
            .unwrap_or_else(|e| panic!("acknowledged {name} v{version} is gone: {e}"));
        assert_eq!(
            &got.payload[..],
            &value[..],
            "acknowledged {name} v{version} reads back different bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9_and_the_audit_chain_verifies() {
    let cycles: usize = std::env::var("KEYSAFE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KEYSAFE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {cycles} cycles, KEYSAFE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("data");
    let (first, url, home) = served(t, &[]).await;
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let client = KeysafeClient::from_home_with(
        &ClientHome::load(&home).unwrap(),
        &ClientOptions {
            use_cache: false,
            timeout: Duration::from_secs(20),
            failover: FailoverOptions {
                retries: 0,
                ..FailoverOptions::default()
            },
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let acked: Acked = Arc::default();
    let attempted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut serve = Some(first);
    for cycle in 0..cycles {
        if serve.is_none() {
            let (s, _) = spawn_serve_at(t, &dir, "127.0.0.1", port);
            wait_healthy(&url).await;
            serve = Some(s);
        }
        let before = acked.lock().unwrap().len();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (client, acked, stop, attempted) = (
                    client.clone(),
                    acked.clone(),
                    stop.clone(),
                    attempted.clone(),
                );
                tokio::spawn(async move {
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        // Odd writers share one deposit: its versions are queued behind
                        // each other and share commits, so a kill lands among them.
                        let name = if w % 2 == 1 {
                            DepositName::parse("crash/hot").unwrap()
                        } else {
                            DepositName::parse(&format!("crash/w{w}/k{}", n % KEYS)).unwrap()
                        };
                        // Distinct bytes per write, of varying length.
                        let value = format!("c{cycle}-w{w}-n{n}-")
                            .repeat(1 + (n % 40) as usize)
                            .into_bytes();
                        attempted.fetch_add(1, Ordering::Relaxed);
                        match client.put(&name, value.clone(), Precondition::None).await {
                            Ok(r) => acked.lock().unwrap().push((name, r.version, value)),
                            // The server is gone (killed): stop when told to.
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        // Let the writers run, then kill at a random moment in 100-700 ms.
        tokio::time::sleep(Duration::from_millis(100 + rng.next() % 600)).await;
        serve.take().unwrap().kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        let (s, _) = spawn_serve_at(t, &dir, "127.0.0.1", port);
        wait_healthy(&url).await;
        serve = Some(s);
        let this_cycle: Vec<_> = acked.lock().unwrap()[before..].to_vec();
        assert!(
            !this_cycle.is_empty() || cycle > 0,
            "no write was acknowledged before the first kill"
        );
        verify(&client, &this_cycle).await;
    }
    // Everything acknowledged in every cycle, once more at the end.
    let all = acked.lock().unwrap().clone();
    verify(&client, &all).await;
    let mut c = keysafe(t);
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["audit", "verify"]);
    let report = ok(&run(c).await);
    eprintln!(
        "crash test: {cycles} kill -9 cycles in {:.1} s, {WRITERS} writers: {} puts attempted, \
         {} acknowledged, none lost; audit verify: {}",
        started.elapsed().as_secs_f64(),
        attempted.load(Ordering::Relaxed),
        all.len(),
        report.lines().next().unwrap_or_default()
    );
    serve.take().unwrap().kill();
}
