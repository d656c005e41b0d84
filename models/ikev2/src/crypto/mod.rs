//! Cryptography through an injected provider, as rustls does it.
//!
//! [`CryptoProvider`] gathers what IKEv2 needs: the PRF, the AEAD that protects SK
//! payloads, and key exchanges (X25519 and ML-KEM). Every random byte comes from the
//! caller's `rand_core::CryptoRng` (in the simulator, the entity's seeded ChaCha20
//! stream), so a seed reproduces every key. Two providers exist:
//! - [`RealCrypto`]: ml-kem, x25519-dalek, aes-gcm and HMAC-SHA2 (the default);
//! - [`ModelCrypto`]: the same sizes and the same success and failure behaviour with no
//!   real mathematics, for sweeps over very large topologies. It is INSECURE, and says
//!   so in [`CryptoProvider::name`].

mod model;
mod real;

pub use model::ModelCrypto;
pub use real::RealCrypto;

use rand_core::CryptoRng;

use crate::consts::transform_type as tt;
use crate::consts::{encr, ke, prf};
use crate::proposal::{Algorithm, ProposalSpec};

/// The PRFs (HMAC-SHA2; key length = output length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrfAlg {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl PrfAlg {
    pub fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            prf::HMAC_SHA2_256 => PrfAlg::HmacSha256,
            prf::HMAC_SHA2_384 => PrfAlg::HmacSha384,
            prf::HMAC_SHA2_512 => PrfAlg::HmacSha512,
            _ => return None,
        })
    }

    /// Output length, which is also the preferred key length.
    pub fn output_len(self) -> usize {
        match self {
            PrfAlg::HmacSha256 => 32,
            PrfAlg::HmacSha384 => 48,
            PrfAlg::HmacSha512 => 64,
        }
    }
}

/// AEAD ciphers for SK payloads (RFC 5282): AES-GCM with a 16-byte ICV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AeadAlg {
    AesGcm16_128,
    AesGcm16_256,
}

impl AeadAlg {
    pub fn from_algorithm(a: &Algorithm) -> Option<Self> {
        match (a.kind, a.id, a.key_bits) {
            (tt::ENCR, encr::AES_GCM_16, Some(128)) => Some(AeadAlg::AesGcm16_128),
            (tt::ENCR, encr::AES_GCM_16, Some(256)) => Some(AeadAlg::AesGcm16_256),
            _ => None,
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            AeadAlg::AesGcm16_128 => 16,
            AeadAlg::AesGcm16_256 => 32,
        }
    }

    /// Key material per direction: the key followed by the 4-byte salt.
    pub fn keymat_len(self) -> usize {
        self.key_len() + SALT_LEN
    }
}

pub const SALT_LEN: usize = 4;

/// An AEAD key followed by its 4-byte salt (RFC 4106 section 8.1): an AES-256 key at
/// most.
pub type AeadKey = InlineKey<{ 32 + SALT_LEN }>;

/// A key of a PRF's output length (SK_d, SK_pi, SK_pr): HMAC-SHA-512's at most.
pub type PrfKey = InlineKey<64>;

/// Key bytes held inline rather than in an allocation of their own: a hub holds
/// thousands of IKE, Child and ESP SAs, and a key behind a pointer is one more cache
/// line to fetch whenever its SA is used.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineKey<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> InlineKey<N> {
    /// At most `N` bytes: keys are cut from key material whose lengths the negotiated
    /// algorithms set, never read from the wire.
    pub fn new(key: &[u8]) -> Self {
        assert!(
            key.len() <= N && N <= 255,
            "key longer than its kind allows"
        );
        let mut bytes = [0; N];
        bytes[..key.len()].copy_from_slice(key);
        InlineKey {
            len: key.len() as u8,
            bytes,
        }
    }
}

impl<const N: usize> std::ops::Deref for InlineKey<N> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl<const N: usize> std::ops::DerefMut for InlineKey<N> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len as usize]
    }
}

impl<const N: usize> std::fmt::Debug for InlineKey<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are for keylogs, which say so; not for debug output.
        write!(f, "InlineKey({} bytes)", self.len)
    }
}

/// Explicit IV on the wire.
pub const IV_LEN: usize = 8;
/// The GCM tag.
pub const ICV_LEN: usize = 16;

/// Key exchange methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeMethod {
    X25519,
    MlKem512,
    MlKem768,
    MlKem1024,
}

impl KeMethod {
    pub fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            ke::X25519 => KeMethod::X25519,
            ke::ML_KEM_512 => KeMethod::MlKem512,
            ke::ML_KEM_768 => KeMethod::MlKem768,
            ke::ML_KEM_1024 => KeMethod::MlKem1024,
            _ => return None,
        })
    }

    pub fn id(self) -> u16 {
        match self {
            KeMethod::X25519 => ke::X25519,
            KeMethod::MlKem512 => ke::ML_KEM_512,
            KeMethod::MlKem768 => ke::ML_KEM_768,
            KeMethod::MlKem1024 => ke::ML_KEM_1024,
        }
    }

    /// Length of the initiator's KE data (X25519 public value, or ML-KEM ek).
    pub fn initiator_len(self) -> usize {
        match self {
            KeMethod::X25519 => 32,
            KeMethod::MlKem512 => 800,
            KeMethod::MlKem768 => 1184,
            KeMethod::MlKem1024 => 1568,
        }
    }

    /// Length of the responder's KE data (X25519 public value, or ML-KEM ciphertext).
    pub fn responder_len(self) -> usize {
        match self {
            KeMethod::X25519 => 32,
            KeMethod::MlKem512 => 768,
            KeMethod::MlKem768 => 1088,
            KeMethod::MlKem1024 => 1568,
        }
    }
}

/// The algorithms an IKE SA runs with, from its negotiated proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Suite {
    pub prf: PrfAlg,
    pub aead: AeadAlg,
}

impl Suite {
    /// The suite of a negotiated IKE proposal, if we implement its algorithms.
    pub fn from_proposal(p: &ProposalSpec) -> Option<Self> {
        Some(Suite {
            prf: PrfAlg::from_id(p.chosen(tt::PRF)?.id)?,
            aead: AeadAlg::from_algorithm(&p.chosen(tt::ENCR)?)?,
        })
    }
}

/// A key exchange in progress on the initiating side.
pub enum KeSecret {
    X25519(x25519_dalek::StaticSecret),
    MlKem512(Box<ml_kem::DecapsulationKey512>),
    MlKem768(Box<ml_kem::DecapsulationKey768>),
    MlKem1024(Box<ml_kem::DecapsulationKey1024>),
    /// Model crypto keeps the head of its own public value: all that completing the
    /// exchange reads (every method's public value is at least that long).
    Model {
        method: KeMethod,
        public: [u8; 32],
    },
}

impl KeSecret {
    pub fn method(&self) -> KeMethod {
        match self {
            KeSecret::X25519(_) => KeMethod::X25519,
            KeSecret::MlKem512(_) => KeMethod::MlKem512,
            KeSecret::MlKem768(_) => KeMethod::MlKem768,
            KeSecret::MlKem1024(_) => KeMethod::MlKem1024,
            KeSecret::Model { method, .. } => *method,
        }
    }
}

/// A cryptographic operation failed; whose fault it is follows from the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The peer's KE data has the wrong length or fails the FIPS 203 input checks.
    #[error("{method:?} key exchange data of {len} bytes is invalid")]
    InvalidKeData { method: KeMethod, len: usize },
    /// X25519 gave the all-zero output (a small-order peer value, RFC 8031).
    #[error("X25519 shared secret is all zero")]
    NonContributory,
    /// ICV mismatch: wrong key, or the message was altered.
    #[error("integrity check failed")]
    Integrity,
    /// A secret of another provider or method was passed in.
    #[error("key exchange state does not belong to this provider")]
    WrongState,
}

/// An AEAD key whose key schedule is expanded once, for the many packets of one SA
/// (what a kernel's SA holds). Same results as the provider's `seal` and `open`.
pub trait PreparedAead: Send {
    fn seal(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut Vec<u8>) {
        let icv = self.seal_detached(iv, aad, buf);
        buf.extend_from_slice(&icv);
    }
    /// Encrypts `buf` in place and returns the ICV (what `seal` appends).
    fn seal_detached(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; ICV_LEN];
    /// Checks and removes the ICV, then decrypts `buf` in place.
    fn open(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        let split = buf
            .len()
            .checked_sub(ICV_LEN)
            .ok_or(CryptoError::Integrity)?;
        let tag: [u8; ICV_LEN] = buf[split..].try_into().expect("16 bytes");
        buf.truncate(split);
        self.open_detached(iv, aad, buf, &tag)
    }
    /// Checks `tag` and decrypts `buf` in place (a packet opened where it lies).
    fn open_detached(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; ICV_LEN],
    ) -> Result<(), CryptoError>;
}

/// Everything IKEv2 asks of cryptography.
pub trait CryptoProvider {
    /// "real", or a name that says the provider is insecure.
    fn name(&self) -> &'static str;

    /// `prf(key, data[0] | data[1] | ...)`.
    fn prf(&self, alg: PrfAlg, key: &[u8], data: &[&[u8]]) -> Vec<u8>;

    /// Encrypts `buf` in place and appends the ICV. `key` is key | salt.
    fn seal(&self, alg: AeadAlg, key: &[u8], iv: &[u8; IV_LEN], aad: &[u8], buf: &mut Vec<u8>) {
        let icv = self.seal_detached(alg, key, iv, aad, buf);
        buf.extend_from_slice(&icv);
    }

    /// Encrypts `buf` in place and returns the ICV: for a message built around `buf`,
    /// which then needs no copy of its own.
    fn seal_detached(
        &self,
        alg: AeadAlg,
        key: &[u8],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; ICV_LEN];

    /// Checks and removes the ICV, then decrypts `buf` in place.
    fn open(
        &self,
        alg: AeadAlg,
        key: &[u8],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError>;

    /// `key` (key | salt) prepared for repeated `seal`/`open`.
    fn prepare(&self, alg: AeadAlg, key: &[u8]) -> Box<dyn PreparedAead>;

    /// Initiator: a fresh key pair; returns the secret state and the KE data to send.
    fn ke_initiate(&self, method: KeMethod, rng: &mut dyn CryptoRng) -> (KeSecret, Vec<u8>);

    /// Responder: from the initiator's KE data, the KE data to send back and the shared
    /// secret.
    fn ke_respond(
        &self,
        method: KeMethod,
        peer: &[u8],
        rng: &mut dyn CryptoRng,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError>;

    /// Initiator: the shared secret from the responder's KE data.
    fn ke_complete(&self, secret: KeSecret, peer: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// `prf+(K, S) = T1 | T2 | ...`, `T1 = prf(K, S | 0x01)`, `Tn = prf(K, T(n-1) | S | n)`,
/// truncated to `len` bytes (at most 255 blocks).
pub fn prf_plus(
    c: &dyn CryptoProvider,
    alg: PrfAlg,
    key: &[u8],
    seed: &[&[u8]],
    len: usize,
) -> Vec<u8> {
    assert!(
        len <= 255 * alg.output_len(),
        "prf+ output limited to 255 blocks"
    );
    let mut out = Vec::with_capacity(len + alg.output_len());
    let mut prev: Vec<u8> = Vec::new();
    let mut n = 1u8;
    while out.len() < len {
        let counter = [n];
        // T(n-1) | S | n, on the stack for the few parts a key derivation has.
        let mut few: [&[u8]; 8] = [&[]; 8];
        prev = match few.get_mut(..seed.len() + 2) {
            Some(parts) => {
                parts[0] = &prev;
                parts[1..=seed.len()].copy_from_slice(seed);
                parts[seed.len() + 1] = &counter;
                c.prf(alg, key, parts)
            }
            None => {
                let parts: Vec<&[u8]> = (std::iter::once(&prev[..]))
                    .chain(seed.iter().copied())
                    .chain(std::iter::once(&counter[..]))
                    .collect();
                c.prf(alg, key, &parts)
            }
        };
        out.extend_from_slice(&prev);
        n = n.wrapping_add(1);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests;
