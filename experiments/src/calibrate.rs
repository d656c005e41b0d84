//! `qsafe calibrate`: measures what each crypto operation of the CPU model costs on
//! this machine (real crypto, medians of repeated batches) and prints a gateway's
//! `cpu = { ... }` in scenario syntax. Wall-clock time is read here and only here: it
//! measures the machine, and nothing of it enters a simulation unless pasted into one.

use std::time::Instant;

use ikev2::crypto::{AeadAlg, CryptoProvider, KeMethod, PrfAlg, RealCrypto};
use netsim::cpu::CpuCosts;
use sim_core::SimDuration;

/// The median time of one call of `f`, over `batches` batches of `per_batch` calls.
fn median_ns(batches: usize, per_batch: u32, mut f: impl FnMut()) -> u64 {
    let mut times: Vec<u64> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed().as_nanos() as u64 / per_batch as u64
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// The costs measured here.
pub fn measure() -> CpuCosts {
    let c = RealCrypto;
    let mut rng = sim_core::entity::stream(1, "calibrate", "crypto");
    let ns = SimDuration::from_nanos;
    let mut kex = |m: KeMethod| {
        let (_, ke) = c.ke_initiate(m, &mut rng);
        let initiate = median_ns(15, 20, || {
            c.ke_initiate(m, &mut rng);
        });
        let respond = median_ns(15, 20, || {
            c.ke_respond(m, &ke, &mut rng).expect("valid KE data");
        });
        let complete = median_ns(15, 20, || {
            let (secret, ke) = c.ke_initiate(m, &mut rng);
            let (reply, _) = c.ke_respond(m, &ke, &mut rng).expect("valid KE data");
            c.ke_complete(secret, &reply).expect("valid reply");
        })
        // Medians of noisy timings: the whole can come out below its parts.
        .saturating_sub(initiate + respond);
        [initiate, respond, complete].map(ns)
    };
    let [x25519_initiate, x25519_respond, x25519_complete] = kex(KeMethod::X25519);
    let [mlkem512_initiate, mlkem512_respond, mlkem512_complete] = kex(KeMethod::MlKem512);
    let [mlkem768_initiate, mlkem768_respond, mlkem768_complete] = kex(KeMethod::MlKem768);
    let [mlkem1024_initiate, mlkem1024_respond, mlkem1024_complete] = kex(KeMethod::MlKem1024);
    let prf = median_ns(15, 1000, || {
        c.prf(PrfAlg::HmacSha256, &[7; 32], &[&[1; 64]]);
    });
    let key = [9u8; 36];
    let seal = |len: usize| {
        median_ns(15, 200, || {
            let mut buf = vec![0u8; len];
            c.seal(AeadAlg::AesGcm16_256, &key, &[0; 8], &[0; 32], &mut buf);
        })
    };
    let (small, large) = (seal(64), seal(8256));
    let per_kb = large.saturating_sub(small) / 8;
    CpuCosts {
        x25519_initiate,
        x25519_respond,
        x25519_complete,
        mlkem512_initiate,
        mlkem512_respond,
        mlkem512_complete,
        mlkem768_initiate,
        mlkem768_respond,
        mlkem768_complete,
        mlkem1024_initiate,
        mlkem1024_respond,
        mlkem1024_complete,
        prf: ns(prf),
        aead: ns(small.saturating_sub(per_kb / 16)),
        aead_per_kb: ns(per_kb),
        message: SimDuration::ZERO,
    }
}

/// The measured costs as a gateway's `cpu` line, with this machine's core count.
pub fn scenario_line(costs: &CpuCosts) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let table = toml::Value::try_from(costs).expect("costs serialize");
    let fields: Vec<String> = table
        .as_table()
        .expect("a table")
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!(
        "cpu = {{ cores = {cores}, costs = {{ {} }} }}",
        fields.join(", ")
    )
}
