//! The real provider: HMAC-SHA2, AES-GCM, X25519 and ML-KEM from the RustCrypto crates.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use hmac::{Hmac, KeyInit, Mac};
use ml_kem::kem::{Decapsulate, Encapsulate, KeyExport};
use rand_core::CryptoRng;
use sha2::{Sha256, Sha384, Sha512};

use super::{
    AeadAlg, CryptoError, CryptoProvider, ICV_LEN, IV_LEN, KeMethod, KeSecret, PreparedAead,
    PrfAlg, SALT_LEN,
};

/// The default provider.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealCrypto;

fn hmac<M: Mac + KeyInit>(key: &[u8], data: &[&[u8]]) -> Vec<u8> {
    let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for d in data {
        m.update(d);
    }
    m.finalize().into_bytes().to_vec()
}

/// Encapsulation against the initiator's key, per parameter set (the crate's generic
/// parameter trait is private, hence a macro).
macro_rules! kem_respond {
    ($ek:ty, $peer:expr, $method:expr, $rng:expr) => {{
        let invalid = CryptoError::InvalidKeData {
            method: $method,
            len: $peer.len(),
        };
        let key = $peer.try_into().map_err(|_| invalid.clone())?;
        // `new` runs the FIPS 203 section 7.2 modulus check on the encapsulation key.
        let ek = <$ek>::new(key).map_err(|_| invalid)?;
        let (ct, ss) = ek.encapsulate_with_rng($rng);
        Ok((ct.to_vec(), ss.to_vec()))
    }};
}

/// Decapsulation; the section 7.3 ciphertext check is its length, and decapsulation
/// rejects implicitly (a tampered ciphertext yields an unrelated secret).
macro_rules! kem_complete {
    ($dk:expr, $peer:expr, $method:expr) => {{
        let ct = $peer.try_into().map_err(|_| CryptoError::InvalidKeData {
            method: $method,
            len: $peer.len(),
        })?;
        Ok($dk.decapsulate(ct).to_vec())
    }};
}

fn kem_seed(rng: &mut dyn CryptoRng) -> ml_kem::Seed {
    let mut seed = ml_kem::Seed::default();
    rng.fill_bytes(&mut seed);
    seed
}

impl CryptoProvider for RealCrypto {
    fn name(&self) -> &'static str {
        "real"
    }

    fn prf(&self, alg: PrfAlg, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        match alg {
            PrfAlg::HmacSha256 => hmac::<Hmac<Sha256>>(key, data),
            PrfAlg::HmacSha384 => hmac::<Hmac<Sha384>>(key, data),
            PrfAlg::HmacSha512 => hmac::<Hmac<Sha512>>(key, data),
        }
    }

    fn seal_detached(
        &self,
        alg: AeadAlg,
        key: &[u8],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; ICV_LEN] {
        RealKey::new(alg, key).seal_detached(iv, aad, buf)
    }

    fn open(
        &self,
        alg: AeadAlg,
        key: &[u8],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        if key.len() != alg.keymat_len() {
            return Err(CryptoError::Integrity);
        }
        RealKey::new(alg, key).open(iv, aad, buf)
    }

    fn prepare(&self, alg: AeadAlg, key: &[u8]) -> Box<dyn PreparedAead> {
        Box::new(RealKey::new(alg, key))
    }

    fn ke_initiate(&self, method: KeMethod, rng: &mut dyn CryptoRng) -> (KeSecret, Vec<u8>) {
        match method {
            KeMethod::X25519 => {
                let mut bytes = [0u8; 32];
                rng.fill_bytes(&mut bytes);
                let secret = x25519_dalek::StaticSecret::from(bytes);
                let public = x25519_dalek::PublicKey::from(&secret).to_bytes().to_vec();
                (KeSecret::X25519(secret), public)
            }
            KeMethod::MlKem512 => {
                let dk = ml_kem::DecapsulationKey512::from_seed(kem_seed(rng));
                let ek = dk.encapsulation_key().to_bytes().to_vec();
                (KeSecret::MlKem512(Box::new(dk)), ek)
            }
            KeMethod::MlKem768 => {
                let dk = ml_kem::DecapsulationKey768::from_seed(kem_seed(rng));
                let ek = dk.encapsulation_key().to_bytes().to_vec();
                (KeSecret::MlKem768(Box::new(dk)), ek)
            }
            KeMethod::MlKem1024 => {
                let dk = ml_kem::DecapsulationKey1024::from_seed(kem_seed(rng));
                let ek = dk.encapsulation_key().to_bytes().to_vec();
                (KeSecret::MlKem1024(Box::new(dk)), ek)
            }
        }
    }

    fn ke_respond(
        &self,
        method: KeMethod,
        peer: &[u8],
        rng: &mut dyn CryptoRng,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        match method {
            KeMethod::X25519 => {
                let (secret, public) = self.ke_initiate(method, rng);
                let shared = self.ke_complete(secret, peer)?;
                Ok((public, shared))
            }
            KeMethod::MlKem512 => kem_respond!(ml_kem::EncapsulationKey512, peer, method, rng),
            KeMethod::MlKem768 => kem_respond!(ml_kem::EncapsulationKey768, peer, method, rng),
            KeMethod::MlKem1024 => kem_respond!(ml_kem::EncapsulationKey1024, peer, method, rng),
        }
    }

    fn ke_complete(&self, secret: KeSecret, peer: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let method = secret.method();
        match secret {
            KeSecret::X25519(s) => {
                let p: [u8; 32] = peer.try_into().map_err(|_| CryptoError::InvalidKeData {
                    method,
                    len: peer.len(),
                })?;
                let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(p));
                if !shared.was_contributory() {
                    return Err(CryptoError::NonContributory);
                }
                Ok(shared.as_bytes().to_vec())
            }
            KeSecret::MlKem512(dk) => kem_complete!(dk, peer, method),
            KeSecret::MlKem768(dk) => kem_complete!(dk, peer, method),
            KeSecret::MlKem1024(dk) => kem_complete!(dk, peer, method),
            KeSecret::Model { .. } => Err(CryptoError::WrongState),
        }
    }
}

// Each lives boxed (a prepared SA key) or for one call on the stack: the size
// difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Gcm {
    Aes128(Aes128Gcm),
    Aes256(Aes256Gcm),
}

/// An AES-GCM key with its round keys expanded, and the salt of its nonces.
struct RealKey {
    cipher: Gcm,
    salt: [u8; SALT_LEN],
}

impl RealKey {
    fn new(alg: AeadAlg, key: &[u8]) -> RealKey {
        assert_eq!(key.len(), alg.keymat_len(), "an AEAD key is key | salt");
        let k = &key[..alg.key_len()];
        let cipher = match alg {
            AeadAlg::AesGcm16_128 => {
                Gcm::Aes128(Aes128Gcm::new_from_slice(k).expect("key length checked"))
            }
            AeadAlg::AesGcm16_256 => {
                Gcm::Aes256(Aes256Gcm::new_from_slice(k).expect("key length checked"))
            }
        };
        let salt = key[alg.key_len()..].try_into().expect("the salt");
        RealKey { cipher, salt }
    }

    /// The GCM nonce: salt | IV (RFC 4106/5282).
    fn nonce(&self, iv: &[u8; IV_LEN]) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(iv);
        n
    }
}

impl PreparedAead for RealKey {
    fn seal_detached(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; ICV_LEN] {
        let n = self.nonce(iv);
        match &self.cipher {
            Gcm::Aes128(c) => c.encrypt_inout_detached(&n.into(), aad, buf.into()),
            Gcm::Aes256(c) => c.encrypt_inout_detached(&n.into(), aad, buf.into()),
        }
        .expect("IKE and ESP packets are far below the GCM length limit")
        .into()
    }

    fn open_detached(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; ICV_LEN],
    ) -> Result<(), CryptoError> {
        let n = self.nonce(iv);
        match &self.cipher {
            Gcm::Aes128(c) => c.decrypt_inout_detached(&n.into(), aad, buf.into(), tag.into()),
            Gcm::Aes256(c) => c.decrypt_inout_detached(&n.into(), aad, buf.into(), tag.into()),
        }
        .map_err(|_| CryptoError::Integrity)
    }
}
