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
    let mut out = vec![0; len];
    mix_into(domain, parts, &mut out);
    out
}

/// [`mix`] into `out` (its length is the length asked for): an AEAD tag is made and
/// checked on the stack, for every IKE message and ESP packet.
fn mix_into(domain: u64, parts: &[&[u8]], out: &mut [u8]) {
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
    for (i, block) in out.chunks_mut(8).enumerate() {
        // splitmix64 finalizer over (h, block counter)
        let mut z = h.wrapping_add((i as u64).wrapping_mul(K));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let z = (z ^ (z >> 31)).to_le_bytes();
        block.copy_from_slice(&z[..block.len()]);
    }
}

/// The model's AEAD check: `tag` is what sealing `body` made (the model encrypts nothing).
fn check_tag(
    key: &[u8],
    iv: &[u8; IV_LEN],
    aad: &[u8],
    body: &[u8],
    tag: &[u8],
) -> Result<(), CryptoError> {
    let mut expected = [0; ICV_LEN];
    mix_into(2, &[key, iv, aad, body], &mut expected);
    match expected[..] == *tag {
        true => Ok(()),
        false => Err(CryptoError::Integrity),
    }
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
        // The key, then the data: on the stack for the few parts a PRF is given.
        let mut few: [&[u8]; 8] = [&[]; 8];
        if let Some(rest) = few.get_mut(1..=data.len()) {
            rest.copy_from_slice(data);
            few[0] = key;
            return mix(1, &few[..=data.len()], alg.output_len());
        }
        let parts: Vec<&[u8]> = std::iter::once(key).chain(data.iter().copied()).collect();
        mix(1, &parts, alg.output_len())
    }

    fn seal_detached(
        &self,
        _alg: AeadAlg,
        key: &[u8],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; ICV_LEN] {
        let mut tag = [0; ICV_LEN];
        mix_into(2, &[key, iv, aad, buf], &mut tag);
        tag
    }

    fn open(
        &self,
        _alg: AeadAlg,
        key: &[u8],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let split = buf
            .len()
            .checked_sub(ICV_LEN)
            .ok_or(CryptoError::Integrity)?;
        check_tag(key, iv, aad, &buf[..split], &buf[split..])?;
        buf.truncate(split);
        Ok(())
    }

    fn prepare(&self, alg: AeadAlg, key: &[u8]) -> Box<dyn PreparedAead> {
        Box::new(ModelKey(alg, key.to_vec()))
    }

    fn ke_initiate(&self, method: KeMethod, rng: &mut dyn CryptoRng) -> (KeSecret, Vec<u8>) {
        let public = random(rng, method.initiator_len());
        let head = public[..32]
            .try_into()
            .expect("a public value of 32 bytes or more");
        (
            KeSecret::Model {
                method,
                public: head,
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
    fn seal_detached(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; ICV_LEN] {
        ModelCrypto.seal_detached(self.0, &self.1, iv, aad, buf)
    }

    fn open_detached(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; ICV_LEN],
    ) -> Result<(), CryptoError> {
        check_tag(&self.1, iv, aad, buf, tag)
    }
}
