//! Gateways with finite CPU: each crypto operation a gateway's IKE endpoint performs
//! costs simulated time, and that work queues on the gateway's cores, so the messages
//! it sends leave only when the work that produced them is done. A hub that 10,000
//! spokes re-authenticate with at once then answers them one core-time after another,
//! and a lone handshake takes its round trips plus the sum of its operation costs.
//!
//! How: the gateway's endpoint gets a [`Metered`] crypto provider, which adds each
//! operation's cost to a meter; after each input (a datagram, a timer, a command) the
//! driver takes what the meter holds as one job and runs it on the earliest free core
//! ([`Cpu::run`]): it starts when that core is free and ends its cost later, and what
//! the input made the endpoint send goes out then. The endpoint's state changes when
//! the input arrives (the simplification: a real gateway would start the work only
//! when a core is free); what the peers see, the time its messages leave, is right.
//! ESP is not charged (its AES-GCM is cheap beside IKE's key exchanges; noted in the
//! README).
//!
//! The costs default to a reference table measured on the development machine (2-core
//! x86_64, release build); `qsafe calibrate` measures them on the machine it runs on
//! and prints them in this syntax.

use std::cell::Cell;
use std::rc::Rc;

use ikev2::crypto::{
    AeadAlg, CryptoError, CryptoProvider, ICV_LEN, IV_LEN, KeMethod, KeSecret, PreparedAead, PrfAlg,
};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sim_core::{SimDuration, SimTime};

/// What one operation costs. Every field has the reference machine's figure as its
/// default, so a scenario names only what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CpuCosts {
    /// X25519 at the initiator: a key pair.
    pub x25519_initiate: SimDuration,
    /// X25519 at the responder: a key pair and the shared secret.
    pub x25519_respond: SimDuration,
    /// X25519 at the initiator: the shared secret.
    pub x25519_complete: SimDuration,
    /// ML-KEM-512 key generation (initiator).
    pub mlkem512_initiate: SimDuration,
    /// ML-KEM-512 encapsulation (responder).
    pub mlkem512_respond: SimDuration,
    /// ML-KEM-512 decapsulation (initiator).
    pub mlkem512_complete: SimDuration,
    /// ML-KEM-768 key generation (initiator).
    pub mlkem768_initiate: SimDuration,
    /// ML-KEM-768 encapsulation (responder).
    pub mlkem768_respond: SimDuration,
    /// ML-KEM-768 decapsulation (initiator).
    pub mlkem768_complete: SimDuration,
    /// ML-KEM-1024 key generation (initiator).
    pub mlkem1024_initiate: SimDuration,
    /// ML-KEM-1024 encapsulation (responder).
    pub mlkem1024_respond: SimDuration,
    /// ML-KEM-1024 decapsulation (initiator).
    pub mlkem1024_complete: SimDuration,
    /// One prf call (HMAC over a short input; prf+ costs one per output block).
    pub prf: SimDuration,
    /// One AES-GCM seal or open, plus `aead_per_kb` per kilobyte of data.
    pub aead: SimDuration,
    /// AES-GCM per kilobyte of data.
    pub aead_per_kb: SimDuration,
    /// Everything else about handling one IKE datagram (parsing, state, the kernel): 0
    /// by default; set it to match a real gateway's measured handshake time.
    pub message: SimDuration,
}

const fn us(tenths: u64) -> SimDuration {
    SimDuration::from_nanos(tenths * 100)
}

impl Default for CpuCosts {
    /// Measured on the development machine (2-core x86_64, release, medians).
    fn default() -> Self {
        CpuCosts {
            x25519_initiate: us(153),
            x25519_respond: us(683),
            x25519_complete: us(530),
            mlkem512_initiate: us(418),
            mlkem512_respond: us(474),
            mlkem512_complete: us(681),
            mlkem768_initiate: us(693),
            mlkem768_respond: us(742),
            mlkem768_complete: us(1024),
            mlkem1024_initiate: us(1042),
            mlkem1024_respond: us(1073),
            mlkem1024_complete: us(1433),
            prf: SimDuration::from_nanos(229),
            aead: SimDuration::from_nanos(110),
            aead_per_kb: SimDuration::from_nanos(400),
            message: SimDuration::ZERO,
        }
    }
}

impl CpuCosts {
    fn key_exchange(&self, method: KeMethod) -> [SimDuration; 3] {
        match method {
            KeMethod::X25519 => [
                self.x25519_initiate,
                self.x25519_respond,
                self.x25519_complete,
            ],
            KeMethod::MlKem512 => [
                self.mlkem512_initiate,
                self.mlkem512_respond,
                self.mlkem512_complete,
            ],
            KeMethod::MlKem768 => [
                self.mlkem768_initiate,
                self.mlkem768_respond,
                self.mlkem768_complete,
            ],
            KeMethod::MlKem1024 => [
                self.mlkem1024_initiate,
                self.mlkem1024_respond,
                self.mlkem1024_complete,
            ],
        }
    }

    fn aead_bytes(&self, bytes: usize) -> u64 {
        self.aead.as_nanos() + self.aead_per_kb.as_nanos() * bytes as u64 / 1024
    }
}

/// A gateway's CPU (scenario: `cpu = { cores = 2, costs = { mlkem768_respond = "80us" } }`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    /// Cores that run IKE work in parallel; a job waits for a free one.
    #[serde(default = "one")]
    pub cores: u32,
    /// The time each cryptographic operation takes on one core.
    #[serde(default)]
    pub costs: CpuCosts,
}

fn one() -> u32 {
    1
}

/// Simulated CPU time spent so far, shared by a [`Metered`] provider and its [`Cpu`].
#[derive(Clone, Default)]
pub struct Meter(Rc<Cell<u64>>);

impl Meter {
    pub fn add(&self, ns: u64) {
        self.0.set(self.0.get() + ns);
    }

    /// What was spent since the last call.
    pub fn take(&self) -> u64 {
        self.0.take()
    }
}

/// A crypto provider that charges each operation's cost to a meter.
pub struct Metered {
    inner: Box<dyn CryptoProvider>,
    costs: CpuCosts,
    meter: Meter,
}

impl Metered {
    pub fn new(inner: Box<dyn CryptoProvider>, costs: CpuCosts, meter: Meter) -> Self {
        Metered {
            inner,
            costs,
            meter,
        }
    }
}

impl CryptoProvider for Metered {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn prf(&self, alg: PrfAlg, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        self.meter.add(self.costs.prf.as_nanos());
        self.inner.prf(alg, key, data)
    }

    fn seal_detached(
        &self,
        alg: AeadAlg,
        key: &[u8],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; ICV_LEN] {
        self.meter.add(self.costs.aead_bytes(buf.len()));
        self.inner.seal_detached(alg, key, iv, aad, buf)
    }

    fn open(
        &self,
        alg: AeadAlg,
        key: &[u8],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.meter.add(self.costs.aead_bytes(buf.len()));
        self.inner.open(alg, key, iv, aad, buf)
    }

    fn prepare(&self, alg: AeadAlg, key: &[u8]) -> Box<dyn PreparedAead> {
        self.inner.prepare(alg, key)
    }

    fn ke_initiate(&self, method: KeMethod, rng: &mut dyn CryptoRng) -> (KeSecret, Vec<u8>) {
        self.meter
            .add(self.costs.key_exchange(method)[0].as_nanos());
        self.inner.ke_initiate(method, rng)
    }

    fn ke_respond(
        &self,
        method: KeMethod,
        peer: &[u8],
        rng: &mut dyn CryptoRng,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        self.meter
            .add(self.costs.key_exchange(method)[1].as_nanos());
        self.inner.ke_respond(method, peer, rng)
    }

    fn ke_complete(&self, secret: KeSecret, peer: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.meter
            .add(self.costs.key_exchange(secret.method())[2].as_nanos());
        self.inner.ke_complete(secret, peer)
    }
}

/// A gateway's cores: when each is free, and what they did.
pub struct Cpu {
    free_at: Vec<SimTime>,
    pub meter: Meter,
    pub costs: CpuCosts,
    /// Core time spent, jobs run, and the longest a job waited for a core.
    pub busy_ns: u64,
    pub jobs: u64,
    pub max_wait_ns: u64,
}

impl Cpu {
    pub fn new(config: &CpuConfig, meter: Meter) -> Self {
        Cpu {
            free_at: vec![SimTime::ZERO; config.cores.max(1) as usize],
            meter,
            costs: config.costs.clone(),
            busy_ns: 0,
            jobs: 0,
            max_wait_ns: 0,
        }
    }

    pub fn cores(&self) -> u32 {
        self.free_at.len() as u32
    }

    /// Runs a job of `cost_ns` that became ready at `ready` on the earliest free core
    /// (the lowest-numbered among equals); returns when it ends.
    pub fn run(&mut self, ready: SimTime, cost_ns: u64) -> SimTime {
        let (core, &free) = self
            .free_at
            .iter()
            .enumerate()
            .min_by_key(|&(i, t)| (*t, i))
            .expect("at least one core");
        let start = free.max(ready);
        let end = start + SimDuration::from_nanos(cost_ns);
        self.free_at[core] = end;
        self.busy_ns += cost_ns;
        self.jobs += 1;
        self.max_wait_ns = self
            .max_wait_ns
            .max(start.saturating_since(ready).as_nanos());
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_queue_on_the_earliest_free_core() {
        let mut cpu = Cpu::new(
            &CpuConfig {
                cores: 2,
                costs: CpuCosts::default(),
            },
            Meter::default(),
        );
        let t = |ns| SimTime::from_nanos(ns);
        assert_eq!(cpu.run(t(0), 100), t(100));
        assert_eq!(cpu.run(t(0), 100), t(100));
        // Both busy until 100: the third waits.
        assert_eq!(cpu.run(t(10), 50), t(150));
        assert_eq!(cpu.run(t(500), 10), t(510));
        assert_eq!((cpu.busy_ns, cpu.jobs, cpu.max_wait_ns), (260, 4, 90));
    }

    #[test]
    fn a_metered_provider_charges_each_operation() {
        let meter = Meter::default();
        let costs = CpuCosts::default();
        let m = Metered::new(
            Box::new(ikev2::crypto::ModelCrypto),
            costs.clone(),
            meter.clone(),
        );
        let mut rng = sim_core::entity::stream(1, "t", "t");
        let (secret, ke) = m.ke_initiate(KeMethod::MlKem768, &mut rng);
        let (reply, _) = m.ke_respond(KeMethod::MlKem768, &ke, &mut rng).unwrap();
        m.ke_complete(secret, &reply).unwrap();
        let kex = costs.mlkem768_initiate + costs.mlkem768_respond + costs.mlkem768_complete;
        assert_eq!(meter.take(), kex.as_nanos());
        m.prf(PrfAlg::HmacSha256, b"k", &[b"data"]);
        assert_eq!(meter.take(), 229);
        assert_eq!(meter.take(), 0);
    }
}
