//! Known-answer tests for the real provider, and agreement tests for both providers.

use std::convert::Infallible;

use rand_core::{TryCryptoRng, TryRng};

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Hands out preset bytes, so that a known private value or seed goes in where the
/// provider draws randomness.
struct Fixed(Vec<u8>, usize);

impl TryRng for Fixed {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.copy_from_slice(&self.0[self.1..self.1 + dst.len()]);
        self.1 += dst.len();
        Ok(())
    }
}
impl TryCryptoRng for Fixed {}

fn seeded() -> rand_chacha::ChaCha20Rng {
    rand_core::SeedableRng::seed_from_u64(7)
}

#[test]
fn hmac_sha2_rfc4231_case_1() {
    let key = [0x0b; 20];
    let c = RealCrypto;
    for (alg, expect) in [
        (
            PrfAlg::HmacSha256,
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            PrfAlg::HmacSha384,
            "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
        ),
        (
            PrfAlg::HmacSha512,
            "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
        ),
    ] {
        // Split input: the provider must treat the parts as one string.
        assert_eq!(c.prf(alg, &key, &[b"Hi ", b"There"]), hex(expect));
        assert_eq!(c.prf(alg, &key, &[b"Hi There"]).len(), alg.output_len());
    }
}

#[test]
fn prf_plus_matches_the_cavp_ikev2_vector() {
    let k = hex("37fde90b81d63692620f67367b62092e3efdc6a03509137d731004767ff35010");
    let s = hex("ed80dc79912c32a935fb6d1a3feac07847c1858efc932ea4606fd05609624002");
    let t = hex(
        "63d018a08f7a29daa7d1f92cb63f45fa39bbaf5e5f1a78139613bb891e3e6bf9
         d0448f7c74e05b4c1a25c0b61e62c875e852f287e192d4ae536112db51972164
         00bd5e123470efc15f53161865fe8b19a1416518a157d651ecd2caddab6a9eae
         6a27a55af088218d5156edaa9789f934d9836ed43edffda553822202ff9f7d48
         60ca72e0",
    );
    assert_eq!(prf_plus(&RealCrypto, PrfAlg::HmacSha256, &k, &[&s], 132), t);
    let old = prf_plus(
        &RealCrypto,
        PrfAlg::HmacSha256,
        &[0x0b; 20],
        &[b"Hi There"],
        16,
    );
    assert_eq!(old, hex("b9bdc08988b4c2b75aa93e596ac84205"));
}

#[test]
fn aes_gcm_in_ike_form() {
    let c = RealCrypto;
    // 128-bit: key | salt, IV on the wire, no AAD.
    let key = hex("feffe9928665731c6d6a8f9467308308 cafebabe");
    let iv: [u8; 8] = hex("facedbaddecaf888").try_into().unwrap();
    let pt = hex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
    );
    let mut buf = pt.clone();
    c.seal(AeadAlg::AesGcm16_128, &key, &iv, &[], &mut buf);
    let expect = hex(
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e
         21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985
         4d5c2af327cd64a62cf35abd2ba6fab4",
    );
    assert_eq!(buf, expect);
    c.open(AeadAlg::AesGcm16_128, &key, &iv, &[], &mut buf)
        .unwrap();
    assert_eq!(buf, pt);

    // 256-bit with AAD (GCM specification test case 16).
    let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308 cafebabe");
    let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let mut buf = pt[..60].to_vec();
    c.seal(AeadAlg::AesGcm16_256, &key, &iv, &aad, &mut buf);
    assert_eq!(
        buf,
        hex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662
             76fc6ece0f4e1768cddf8853bb2d551b"
        )
    );
    let mut tampered = buf.clone();
    tampered[3] ^= 1;
    assert_eq!(
        c.open(AeadAlg::AesGcm16_256, &key, &iv, &aad, &mut tampered),
        Err(CryptoError::Integrity)
    );
    let mut wrong_aad = buf.clone();
    assert_eq!(
        c.open(AeadAlg::AesGcm16_256, &key, &iv, &aad[1..], &mut wrong_aad),
        Err(CryptoError::Integrity)
    );
    c.open(AeadAlg::AesGcm16_256, &key, &iv, &aad, &mut buf)
        .unwrap();
    assert_eq!(buf, pt[..60]);
}

#[test]
fn x25519_rfc7748() {
    let c = RealCrypto;
    let a_priv = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let a_pub = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let b_priv = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let b_pub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    let (secret, public) = c.ke_initiate(KeMethod::X25519, &mut Fixed(a_priv, 0));
    assert_eq!(public, a_pub);
    let (reply, ss) = c
        .ke_respond(KeMethod::X25519, &a_pub, &mut Fixed(b_priv, 0))
        .unwrap();
    assert_eq!((reply.clone(), ss), (b_pub, shared.clone()));
    assert_eq!(c.ke_complete(secret, &reply).unwrap(), shared);
    // A small-order peer value gives an all-zero secret, which RFC 8031 rejects.
    let (secret, _) = c.ke_initiate(KeMethod::X25519, &mut seeded());
    assert_eq!(
        c.ke_complete(secret, &[0u8; 32]),
        Err(CryptoError::NonContributory)
    );
}

fn vector(file: &str, key: &str) -> Vec<u8> {
    let line = file
        .lines()
        .find(|l| l.starts_with(&format!("{key}=")))
        .expect("vector present");
    hex(&line[key.len() + 1..])
}

#[test]
fn ml_kem_512_acvp_encapsulation() {
    // Encaps_internal(ek, m): m is the only randomness the provider draws.
    let acvp = |k| vector(include_str!("testdata/acvp-mlkem512.txt"), k);
    let (ct, ss) = RealCrypto
        .ke_respond(
            KeMethod::MlKem512,
            &acvp("encap.ek"),
            &mut Fixed(acvp("encap.m"), 0),
        )
        .unwrap();
    assert_eq!(ct, acvp("encap.c"));
    assert_eq!(ss, acvp("encap.k"));
}

#[test]
fn ml_kem_matches_an_independent_implementation() {
    use sha2::{Digest, Sha256};
    let c = RealCrypto;
    let v = |k: String| vector(include_str!("testdata/kyberpy-mlkem.txt"), &k);
    for (set, m) in [
        ("512", KeMethod::MlKem512),
        ("768", KeMethod::MlKem768),
        ("1024", KeMethod::MlKem1024),
    ] {
        // KeyGen_internal(d, z): the 64-byte seed is d | z.
        let mut seed = v(format!("{set}.d"));
        seed.extend(v(format!("{set}.z")));
        let (secret, ek) = c.ke_initiate(m, &mut Fixed(seed, 0));
        assert_eq!(
            Sha256::digest(&ek).to_vec(),
            v(format!("{set}.ek_sha256")),
            "ML-KEM-{set} ek"
        );
        let (ct, ss) = c
            .ke_respond(m, &ek, &mut Fixed(v(format!("{set}.m")), 0))
            .unwrap();
        assert_eq!(
            Sha256::digest(&ct).to_vec(),
            v(format!("{set}.ct_sha256")),
            "ML-KEM-{set} ct"
        );
        assert_eq!(ss, v(format!("{set}.k")));
        assert_eq!(c.ke_complete(secret, &ct).unwrap(), ss);
    }
}

#[test]
fn ml_kem_round_trips_with_the_fips_203_sizes() {
    let c = RealCrypto;
    let mut rng = seeded();
    for (m, ek_len, ct_len) in [
        (KeMethod::MlKem512, 800, 768),
        (KeMethod::MlKem768, 1184, 1088),
        (KeMethod::MlKem1024, 1568, 1568),
    ] {
        let (secret, ek) = c.ke_initiate(m, &mut rng);
        assert_eq!(
            (ek.len(), m.initiator_len(), m.responder_len()),
            (ek_len, ek_len, ct_len)
        );
        let (ct, ss) = c.ke_respond(m, &ek, &mut rng).unwrap();
        assert_eq!(ct.len(), ct_len);
        assert_eq!(c.ke_complete(secret, &ct).unwrap(), ss);
        // Implicit rejection: a tampered ciphertext yields an unrelated secret.
        let (secret, ek) = c.ke_initiate(m, &mut rng);
        let (mut ct, ss) = c.ke_respond(m, &ek, &mut rng).unwrap();
        ct[10] ^= 0x40;
        assert_ne!(c.ke_complete(secret, &ct).unwrap(), ss);
        // Wrong lengths and keys failing the modulus check are refused.
        assert!(matches!(
            c.ke_respond(m, &ek[1..], &mut rng),
            Err(CryptoError::InvalidKeData { .. })
        ));
        assert!(matches!(
            c.ke_respond(m, &vec![0xff; ek_len], &mut rng),
            Err(CryptoError::InvalidKeData { .. })
        ));
    }
}

#[test]
fn same_seed_same_keys() {
    let c = RealCrypto;
    let run = || {
        let mut rng = seeded();
        let (_, a) = c.ke_initiate(KeMethod::MlKem768, &mut rng);
        let (_, b) = c.ke_initiate(KeMethod::X25519, &mut rng);
        (a, b)
    };
    assert_eq!(run(), run());
}

#[test]
fn model_provider_keeps_sizes_and_failure_behaviour() {
    let c = ModelCrypto;
    assert!(c.name().contains("INSECURE"));
    let mut rng = seeded();
    for m in [
        KeMethod::X25519,
        KeMethod::MlKem512,
        KeMethod::MlKem768,
        KeMethod::MlKem1024,
    ] {
        let (secret, public) = c.ke_initiate(m, &mut rng);
        assert_eq!(public.len(), m.initiator_len());
        let (reply, ss) = c.ke_respond(m, &public, &mut rng).unwrap();
        assert_eq!((reply.len(), ss.len()), (m.responder_len(), 32));
        assert_eq!(c.ke_complete(secret, &reply).unwrap(), ss);
        assert!(c.ke_respond(m, &public[1..], &mut rng).is_err());
    }
    for alg in [PrfAlg::HmacSha256, PrfAlg::HmacSha384, PrfAlg::HmacSha512] {
        let a = c.prf(alg, b"key", &[b"data"]);
        assert_eq!(a.len(), alg.output_len());
        assert_ne!(a, c.prf(alg, b"kez", &[b"data"]));
    }
    let key = [1u8; 36];
    let iv = [2u8; 8];
    let mut buf = b"inner payloads".to_vec();
    c.seal(AeadAlg::AesGcm16_256, &key, &iv, b"aad", &mut buf);
    assert_eq!(buf.len(), 14 + ICV_LEN);
    let mut bad = buf.clone();
    bad[0] ^= 1;
    assert!(
        c.open(AeadAlg::AesGcm16_256, &key, &iv, b"aad", &mut bad)
            .is_err()
    );
    assert!(
        c.open(
            AeadAlg::AesGcm16_256,
            &[9u8; 36],
            &iv,
            b"aad",
            &mut buf.clone()
        )
        .is_err()
    );
    c.open(AeadAlg::AesGcm16_256, &key, &iv, b"aad", &mut buf)
        .unwrap();
    assert_eq!(buf, b"inner payloads");
}
