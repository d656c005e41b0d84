//! The model provider: INSECURE stand-ins with the real sizes and the real success and
//! failure behaviour (a wrong key or an altered byte still fails the ICV, mismatched
//! PPKs still fail AUTH), at a tiny fraction of the cost. For sweeps over very large
//! topologies; a run records which provider it used.

use rand_core::CryptoRng;

use super::{
    AeadAlg, CryptoError, CryptoProvider, ICV_LEN, IV_LEN, KeMethod, KeSecret, PreparedAead, PrfAlg,
};

/// Insecure, cheap, deterministic crypto with real message sizes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelCrypto;

/// A fast non-cryptographic hash of the parts, expanded to `len` bytes.
fn mix(domain: u64, parts: &[&[u8]], len: usize) -> Vec<u8> {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = domain ^ K;
    for part in parts {
        h = (h ^ part.len() as u64).wrapping_mul(K).rotate_left(31);
        let mut chunks = part.chunks_exact(8);
        for c in &mut chunks {
            h = (h ^ u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .wrapping_mul(K)
                .rotate_left(27);
        }
        for &b in chunks.remainder() {
            h = (h ^ b as u64).wrapping_mul(K).rotate_left(23);
        }
    }
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0u64;
    while out.len() < len {
        // splitmix64 finalizer over (h, block counter)
        let mut z = h.wrapping_add(i.wrapping_mul(K));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn random(rng: &mut dyn CryptoRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

impl CryptoProvider for ModelCrypto {
    fn name(&self) -> &'static str {
        "model (INSECURE: no real cryptography)"
    }

    fn prf(&self, alg: PrfAlg, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        let mut parts = Vec::with_capacity(data.len() + 1);
        parts.push(key);
        parts.extend_from_slice(data);
        mix(1, &parts, alg.output_len())
    }

    fn seal(&self, _alg: AeadAlg, key: &[u8], iv: &[u8; IV_LEN], aad: &[u8], buf: &mut Vec<u8>) {
        let tag = mix(2, &[key, iv, aad, buf], ICV_LEN);
        buf.extend_from_slice(&tag);
    }

    fn open(
        &self,
        _alg: AeadAlg,
        key: &[u8],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        if buf.len() < ICV_LEN {
            return Err(CryptoError::Integrity);
        }
        let split = buf.len() - ICV_LEN;
        if mix(2, &[key, iv, aad, &buf[..split]], ICV_LEN) != buf[split..] {
            return Err(CryptoError::Integrity);
        }
        buf.truncate(split);
        Ok(())
    }

    fn prepare(&self, alg: AeadAlg, key: &[u8]) -> Box<dyn PreparedAead> {
        Box::new(ModelKey(alg, key.to_vec()))
    }

    fn ke_initiate(&self, method: KeMethod, rng: &mut dyn CryptoRng) -> (KeSecret, Vec<u8>) {
        let public = random(rng, method.initiator_len());
        (
            KeSecret::Model {
                method,
                public: public.clone(),
            },
            public,
        )
    }

    fn ke_respond(
        &self,
        method: KeMethod,
        peer: &[u8],
        rng: &mut dyn CryptoRng,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        if peer.len() != method.initiator_len() {
            return Err(CryptoError::InvalidKeData {
                method,
                len: peer.len(),
            });
        }
        let mut reply = random(rng, method.responder_len());
        let shared = if method == KeMethod::X25519 {
            mix(3, &[peer, &reply], 32)
        } else {
            // "Encapsulate": the first 32 bytes carry the secret masked with the ek.
            let ss = random(rng, 32);
            for i in 0..32 {
                reply[i] = ss[i] ^ peer[i];
            }
            ss
        };
        Ok((reply, shared))
    }

    fn ke_complete(&self, secret: KeSecret, peer: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let KeSecret::Model { method, public } = secret else {
            return Err(CryptoError::WrongState);
        };
        if peer.len() != method.responder_len() {
            return Err(CryptoError::InvalidKeData {
                method,
                len: peer.len(),
            });
        }
        Ok(if method == KeMethod::X25519 {
            mix(3, &[&public, peer], 32)
        } else {
            (0..32).map(|i| peer[i] ^ public[i]).collect()
        })
    }
}

/// The model's AEAD key: nothing to expand, the key is kept as it is.
struct ModelKey(AeadAlg, Vec<u8>);

impl PreparedAead for ModelKey {
    fn seal(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut Vec<u8>) {
        ModelCrypto.seal(self.0, &self.1, iv, aad, buf)
    }

    fn open(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        ModelCrypto.open(self.0, &self.1, iv, aad, buf)
    }
}
