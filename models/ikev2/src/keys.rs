//! Key derivation: RFC 7296 (SKEYSEED, the seven SA keys, Child SA KEYMAT, PSK AUTH),
//! RFC 9242 (IntAuth), RFC 9370 (updates after additional key exchanges), RFC 8784 and
//! RFC 9867 (PPK mixing and confirmation). Each function's comment gives its formula
//! and the section that defines it.

use crate::crypto::{AeadKey, CryptoProvider, PrfAlg, PrfKey, Suite, prf_plus};

/// The IKE SA's keys, inline. The suites are AEAD (RFC 5282), so SK_ai and SK_ar have
/// length 0 and are not kept; SK_ei and SK_er carry the cipher key followed by the
/// 4-byte salt.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IkeKeys {
    pub sk_d: PrfKey,
    pub sk_ei: AeadKey,
    pub sk_er: AeadKey,
    pub sk_pi: PrfKey,
    pub sk_pr: PrfKey,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are for keylogs, which say so; not for debug output.
        f.write_str("IkeKeys { .. }")
    }
}

/// What prf+ mixes into the seven keys besides SKEYSEED: Ni | Nr | SPIi | SPIr.
#[derive(Clone, Copy, Debug)]
pub struct SaIdentity<'a> {
    pub ni: &'a [u8],
    pub nr: &'a [u8],
    pub spi_i: u64,
    pub spi_r: u64,
}

impl IkeKeys {
    /// `{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)`.
    pub fn expand(
        c: &dyn CryptoProvider,
        suite: Suite,
        skeyseed: &[u8],
        id: SaIdentity<'_>,
    ) -> Self {
        let p = suite.prf.output_len();
        let e = suite.aead.keymat_len();
        let (spi_i, spi_r) = (id.spi_i.to_be_bytes(), id.spi_r.to_be_bytes());
        let km = prf_plus(
            c,
            suite.prf,
            skeyseed,
            &[id.ni, id.nr, &spi_i, &spi_r],
            3 * p + 2 * e,
        );
        let mut at = 0;
        let mut take = |n: usize| {
            at += n;
            &km[at - n..at]
        };
        IkeKeys {
            sk_d: PrfKey::new(take(p)),
            sk_ei: AeadKey::new(take(e)),
            sk_er: AeadKey::new(take(e)),
            sk_pi: PrfKey::new(take(p)),
            sk_pr: PrfKey::new(take(p)),
        }
    }

    /// After IKE_SA_INIT: `SKEYSEED = prf(Ni | Nr, g^ir)`.
    pub fn initial(
        c: &dyn CryptoProvider,
        suite: Suite,
        shared: &[u8],
        id: SaIdentity<'_>,
    ) -> Self {
        let key = [id.ni, id.nr].concat();
        let skeyseed = c.prf(suite.prf, &key, &[shared]);
        Self::expand(c, suite, &skeyseed, id)
    }

    /// RFC 9370, after the nth additional key exchange:
    /// `SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr)`, all seven keys replaced.
    pub fn after_additional_ke(
        &self,
        c: &dyn CryptoProvider,
        suite: Suite,
        shared: &[u8],
        id: SaIdentity<'_>,
    ) -> Self {
        let skeyseed = c.prf(suite.prf, &self.sk_d, &[shared, id.ni, id.nr]);
        Self::expand(c, suite, &skeyseed, id)
    }

    /// RFC 8784: `SK_d`, `SK_pi`, `SK_pr` become `prf+(PPK, SK_x)` of the same length;
    /// the encryption keys stay (IKE_AUTH is still protected by the classical keys).
    pub fn mix_ppk_rfc8784(&self, c: &dyn CryptoProvider, prf: PrfAlg, ppk: &[u8]) -> Self {
        let mix = |k: &[u8]| PrfKey::new(&prf_plus(c, prf, ppk, &[k], k.len()));
        IkeKeys {
            sk_d: mix(&self.sk_d),
            sk_pi: mix(&self.sk_pi),
            sk_pr: mix(&self.sk_pr),
            ..*self
        }
    }

    /// RFC 9867 (as libreswan implements it): `SKEYSEED' = prf+(PPK, SK_d)` with the PRF
    /// key length, then all seven keys re-derived, so IKE_AUTH is protected too.
    pub fn mix_ppk_rfc9867(
        &self,
        c: &dyn CryptoProvider,
        suite: Suite,
        ppk: &[u8],
        id: SaIdentity<'_>,
    ) -> Self {
        let skeyseed = prf_plus(c, suite.prf, ppk, &[&self.sk_d], suite.prf.output_len());
        Self::expand(c, suite, &skeyseed, id)
    }

    /// IKE SA rekey: `SKEYSEED = prf(SK_d_old, g^ir(new) | Ni | Nr | SK(1) | ... | SK(k))`,
    /// keys from the new SPIs. The PRF is the old SA's, which must equal the new one's:
    /// were the PRF to change, strongSwan would run prf+ with the old PRF and libreswan
    /// with the new one, so a rekey that changes it is refused.
    pub fn rekeyed(
        &self,
        c: &dyn CryptoProvider,
        suite: Suite,
        shared: &[u8],
        additional: &[&[u8]],
        new: SaIdentity<'_>,
    ) -> Self {
        let mut parts: Vec<&[u8]> = vec![shared, new.ni, new.nr];
        parts.extend_from_slice(additional);
        let skeyseed = c.prf(suite.prf, &self.sk_d, &parts);
        Self::expand(c, suite, &skeyseed, new)
    }
}

/// Child SA keying material:
/// `KEYMAT = prf+(SK_d, [g^ir(new) |] Ni | Nr [| SK(1) | ... | SK(k)])`,
/// split as encryption key I->R, integrity I->R, encryption R->I, integrity R->I.
pub fn child_keymat(
    c: &dyn CryptoProvider,
    prf: PrfAlg,
    sk_d: &[u8],
    shared: Option<&[u8]>,
    [ni, nr]: [&[u8]; 2],
    additional: &[&[u8]],
    len: usize,
) -> Vec<u8> {
    let mut seed: Vec<&[u8]> = Vec::with_capacity(3 + additional.len());
    seed.extend(shared);
    seed.push(ni);
    seed.push(nr);
    seed.extend_from_slice(additional);
    prf_plus(c, prf, sk_d, &seed, len)
}

/// RFC 9867 PPK confirmation: the first 8 bytes of `prf(PPK, Ni | Nr | SPIi | SPIr)`.
pub fn ppk_confirmation(
    c: &dyn CryptoProvider,
    prf: PrfAlg,
    ppk: &[u8],
    id: SaIdentity<'_>,
) -> [u8; 8] {
    let (spi_i, spi_r) = (id.spi_i.to_be_bytes(), id.spi_r.to_be_bytes());
    let full = c.prf(prf, ppk, &[id.ni, id.nr, &spi_i, &spi_r]);
    full[..8]
        .try_into()
        .expect("PRF output is at least 32 bytes")
}

const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// The octets one side's AUTH covers (RFC 7296 section 2.15, RFC 9242 section 3.3).
#[derive(Clone, Copy, Debug)]
pub struct SignedOctets<'a> {
    /// The IKE_SA_INIT message this side sent (its final copy).
    pub real_message: &'a [u8],
    /// The peer's Nonce Data.
    pub peer_nonce: &'a [u8],
    /// This side's ID payload without the generic header (IDx').
    pub id_rest: &'a [u8],
    /// [`IntAuth::for_auth`]: empty when no IKE_INTERMEDIATE took place.
    pub int_auth: &'a [u8],
}

/// PSK AUTH data:
/// `prf(prf(PSK, "Key Pad for IKEv2"), RealMessage | NonceData | prf(SK_p, ID') | IntAuth)`.
pub fn psk_auth(
    c: &dyn CryptoProvider,
    prf: PrfAlg,
    psk: &[u8],
    sk_p: &[u8],
    o: SignedOctets<'_>,
) -> Vec<u8> {
    let key = c.prf(prf, psk, &[KEY_PAD]);
    let maced_id = c.prf(prf, sk_p, &[o.id_rest]);
    c.prf(
        prf,
        &key,
        &[o.real_message, o.peer_nonce, &maced_id, o.int_auth],
    )
}

/// RFC 9242 IntAuth: one chain per direction over the IKE_INTERMEDIATE messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntAuth {
    chain_i: Vec<u8>,
    chain_r: Vec<u8>,
    exchanges: u32,
}

impl IntAuth {
    /// Adds one IKE_INTERMEDIATE exchange. `request` and `response` are `A | P` of each
    /// message as if unfragmented (see [`crate::protect::intauth_input`]); `sk_pi` and
    /// `sk_pr` are the keys in force BEFORE this exchange's own key update.
    pub fn add_exchange(
        &mut self,
        c: &dyn CryptoProvider,
        prf: PrfAlg,
        sk_pi: &[u8],
        sk_pr: &[u8],
        request: &[u8],
        response: &[u8],
    ) {
        self.chain_i = c.prf(prf, sk_pi, &[&self.chain_i, request]);
        self.chain_r = c.prf(prf, sk_pr, &[&self.chain_r, response]);
        self.exchanges += 1;
    }

    pub fn exchanges(&self) -> u32 {
        self.exchanges
    }

    /// What AUTH appends: `IntAuth_iN | IntAuth_rN | IKE_AUTH MID`, or nothing at all
    /// when no IKE_INTERMEDIATE exchange took place (libreswan #2834).
    pub fn for_auth(&self, ike_auth_mid: u32) -> Vec<u8> {
        if self.exchanges == 0 {
            return Vec::new();
        }
        [
            &self.chain_i[..],
            &self.chain_r,
            &ike_auth_mid.to_be_bytes(),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{AeadAlg, ModelCrypto, RealCrypto};

    const SUITE: Suite = Suite {
        prf: PrfAlg::HmacSha256,
        aead: AeadAlg::AesGcm16_256,
    };

    fn id() -> SaIdentity<'static> {
        SaIdentity {
            ni: &[1; 32],
            nr: &[2; 32],
            spi_i: 0x1111,
            spi_r: 0x2222,
        }
    }

    #[test]
    fn key_lengths_follow_the_suite() {
        for (prf, total) in [
            (PrfAlg::HmacSha256, 168),
            (PrfAlg::HmacSha384, 216),
            (PrfAlg::HmacSha512, 264),
        ] {
            let suite = Suite {
                prf,
                aead: AeadAlg::AesGcm16_256,
            };
            let k = IkeKeys::initial(&RealCrypto, suite, &[7; 32], id());
            let lens = [&k.sk_d[..], &k.sk_ei, &k.sk_er, &k.sk_pi, &k.sk_pr].map(|v| v.len());
            let p = prf.output_len();
            assert_eq!(lens, [p, 36, 36, p, p]);
            assert_eq!(lens.iter().sum::<usize>(), total);
        }
        let k = IkeKeys::initial(
            &RealCrypto,
            Suite {
                prf: PrfAlg::HmacSha256,
                aead: AeadAlg::AesGcm16_128,
            },
            &[7; 32],
            id(),
        );
        assert_eq!(k.sk_ei.len(), 20);
    }

    #[test]
    fn derivations_match_their_formulas() {
        let c = RealCrypto;
        let k0 = IkeKeys::initial(&c, SUITE, &[7; 32], id());
        // SKEYSEED = prf(Ni | Nr, g^ir), then prf+ over Ni | Nr | SPIi | SPIr.
        let skeyseed = c.prf(
            PrfAlg::HmacSha256,
            &[[1u8; 32], [2; 32]].concat(),
            &[&[7; 32]],
        );
        let seed = [
            &[1u8; 32][..],
            &[2; 32],
            &0x1111u64.to_be_bytes(),
            &0x2222u64.to_be_bytes(),
        ]
        .concat();
        let km = prf_plus(&c, PrfAlg::HmacSha256, &skeyseed, &[&seed], 168);
        assert_eq!(
            (&k0.sk_d[..], &k0.sk_ei[..], &k0.sk_pr[..]),
            (&km[..32], &km[32..68], &km[136..])
        );

        // RFC 9370 update: new keys, all different.
        let k1 = k0.after_additional_ke(&c, SUITE, &[9; 32], id());
        assert!(k1.sk_d != k0.sk_d && k1.sk_ei != k0.sk_ei && k1.sk_pr != k0.sk_pr);
        let s1 = c.prf(
            PrfAlg::HmacSha256,
            &k0.sk_d,
            &[&[9; 32], &[1; 32], &[2; 32]],
        );
        assert_eq!(k1, IkeKeys::expand(&c, SUITE, &s1, id()));

        // RFC 8784 changes SK_d/SK_pi/SK_pr only, each one PRF block here.
        let m = k1.mix_ppk_rfc8784(&c, PrfAlg::HmacSha256, b"qkd key");
        assert_eq!((m.sk_ei, m.sk_er), (k1.sk_ei, k1.sk_er));
        assert_eq!(
            *m.sk_d,
            c.prf(PrfAlg::HmacSha256, b"qkd key", &[&k1.sk_d, &[1]])
        );

        // RFC 9867 changes all seven.
        let q = k1.mix_ppk_rfc9867(&c, SUITE, b"qkd key", id());
        assert!(q.sk_ei != k1.sk_ei && q.sk_d != m.sk_d);
        let s = c.prf(PrfAlg::HmacSha256, b"qkd key", &[&k1.sk_d, &[1]]);
        assert_eq!(q, IkeKeys::expand(&c, SUITE, &s, id()));
    }

    #[test]
    fn child_keymat_with_and_without_ke() {
        let c = RealCrypto;
        let n: [&[u8]; 2] = [&[1; 32], &[2; 32]];
        let plain = child_keymat(&c, PrfAlg::HmacSha256, &[5; 32], None, n, &[], 72);
        let pfs = child_keymat(&c, PrfAlg::HmacSha256, &[5; 32], Some(&[8; 32]), n, &[], 72);
        let multi = child_keymat(
            &c,
            PrfAlg::HmacSha256,
            &[5; 32],
            Some(&[8; 32]),
            n,
            &[&[3; 32]],
            72,
        );
        assert_eq!(plain.len(), 72);
        assert!(plain != pfs && pfs != multi);
        let seed = [&[8u8; 32][..], &[1; 32], &[2; 32], &[3; 32]].concat();
        assert_eq!(
            multi,
            prf_plus(&c, PrfAlg::HmacSha256, &[5; 32], &[&seed], 72)
        );
    }

    #[test]
    fn intauth_is_empty_without_intermediate_exchanges() {
        let c = ModelCrypto;
        let mut ia = IntAuth::default();
        assert!(ia.for_auth(1).is_empty());
        ia.add_exchange(
            &c,
            PrfAlg::HmacSha256,
            &[1; 32],
            &[2; 32],
            b"A1|P1",
            b"A2|P2",
        );
        let one = ia.for_auth(2);
        assert_eq!(one.len(), 32 + 32 + 4);
        assert_eq!(&one[64..], &[0, 0, 0, 2]);
        ia.add_exchange(
            &c,
            PrfAlg::HmacSha256,
            &[3; 32],
            &[4; 32],
            b"A3|P3",
            b"A4|P4",
        );
        assert_ne!(ia.for_auth(3)[..64], one[..64]);
    }

    #[test]
    fn psk_auth_and_confirmation_depend_on_every_input() {
        let c = RealCrypto;
        let o = SignedOctets {
            real_message: b"msg1",
            peer_nonce: &[2; 32],
            id_rest: b"id",
            int_auth: b"",
        };
        let base = psk_auth(&c, PrfAlg::HmacSha256, b"psk", &[1; 32], o);
        assert_eq!(base.len(), 32);
        assert_ne!(base, psk_auth(&c, PrfAlg::HmacSha256, b"psk2", &[1; 32], o));
        assert_ne!(
            base,
            psk_auth(
                &c,
                PrfAlg::HmacSha256,
                b"psk",
                &[1; 32],
                SignedOctets {
                    int_auth: b"ia",
                    ..o
                }
            )
        );
        // The formula, spelled out.
        let key = c.prf(PrfAlg::HmacSha256, b"psk", &[b"Key Pad for IKEv2"]);
        let mac_id = c.prf(PrfAlg::HmacSha256, &[1; 32], &[b"id"]);
        assert_eq!(
            base,
            c.prf(PrfAlg::HmacSha256, &key, &[b"msg1", &[2; 32], &mac_id])
        );
        let conf = ppk_confirmation(&c, PrfAlg::HmacSha256, b"ppk", id());
        assert_ne!(
            conf,
            ppk_confirmation(&c, PrfAlg::HmacSha256, b"other", id())
        );
    }
}
