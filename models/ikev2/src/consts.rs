//! IKEv2 codepoints, as registered by IANA ("Internet Key Exchange Version 2 (IKEv2)
//! Parameters") and used by strongSwan, libreswan and Wireshark; each group names the
//! RFCs that define it.

/// Exchange types (RFC 7296, RFC 9242, RFC 9370).
pub mod exchange {
    pub const IKE_SA_INIT: u8 = 34;
    pub const IKE_AUTH: u8 = 35;
    pub const CREATE_CHILD_SA: u8 = 36;
    pub const INFORMATIONAL: u8 = 37;
    pub const IKE_INTERMEDIATE: u8 = 43;
    pub const IKE_FOLLOWUP_KE: u8 = 44;

    pub fn name(t: u8) -> Option<&'static str> {
        Some(match t {
            IKE_SA_INIT => "IKE_SA_INIT",
            IKE_AUTH => "IKE_AUTH",
            CREATE_CHILD_SA => "CREATE_CHILD_SA",
            INFORMATIONAL => "INFORMATIONAL",
            IKE_INTERMEDIATE => "IKE_INTERMEDIATE",
            IKE_FOLLOWUP_KE => "IKE_FOLLOWUP_KE",
            _ => return None,
        })
    }
}

/// Header flags.
pub mod flags {
    /// Sent by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// Never set by IKEv2 implementations.
    pub const VERSION: u8 = 0x10;
    pub const RESPONSE: u8 = 0x20;
}

/// Payload types.
pub mod payload_type {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const CERT: u8 = 37;
    pub const CERTREQ: u8 = 38;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const VENDOR_ID: u8 = 43;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
    pub const CP: u8 = 47;
    pub const EAP: u8 = 48;
    pub const SKF: u8 = 53;
}

/// Protocol IDs in proposals, notifies and deletes.
pub mod protocol {
    pub const NONE: u8 = 0;
    pub const IKE: u8 = 1;
    pub const AH: u8 = 2;
    pub const ESP: u8 = 3;
}

/// Transform types; ADDKE1..ADDKE7 are 6..12 (RFC 9370).
pub mod transform_type {
    pub const ENCR: u8 = 1;
    pub const PRF: u8 = 2;
    pub const INTEG: u8 = 3;
    pub const KE: u8 = 4;
    pub const ESN: u8 = 5;
    pub const ADDKE1: u8 = 6;
    pub const ADDKE7: u8 = 12;

    /// True for the key exchange types: KE and ADDKE1..7.
    pub fn is_key_exchange(t: u8) -> bool {
        t == KE || (ADDKE1..=ADDKE7).contains(&t)
    }
}

/// Encryption transform IDs.
pub mod encr {
    pub const AES_CBC: u16 = 12;
    pub const AES_GCM_8: u16 = 18;
    pub const AES_GCM_12: u16 = 19;
    pub const AES_GCM_16: u16 = 20;
    pub const CHACHA20_POLY1305: u16 = 28;
}

/// PRF transform IDs.
pub mod prf {
    pub const HMAC_SHA2_256: u16 = 5;
    pub const HMAC_SHA2_384: u16 = 6;
    pub const HMAC_SHA2_512: u16 = 7;
}

/// Integrity transform IDs.
pub mod integ {
    pub const NONE: u16 = 0;
    pub const HMAC_SHA2_256_128: u16 = 12;
    pub const HMAC_SHA2_384_192: u16 = 13;
    pub const HMAC_SHA2_512_256: u16 = 14;
}

/// Key exchange method IDs (transform type 4 and ADDKEn).
pub mod ke {
    pub const NONE: u16 = 0;
    pub const MODP_2048: u16 = 14;
    pub const ECP_256: u16 = 19;
    pub const ECP_384: u16 = 20;
    pub const ECP_521: u16 = 21;
    pub const X25519: u16 = 31;
    pub const X448: u16 = 32;
    pub const ML_KEM_512: u16 = 35;
    pub const ML_KEM_768: u16 = 36;
    pub const ML_KEM_1024: u16 = 37;
}

/// Sequence number (ESN) transform IDs.
pub mod esn {
    pub const NO_ESN: u16 = 0;
    pub const ESN: u16 = 1;
}

/// Transform attribute types.
pub mod attribute {
    /// Key Length in bits, TV format.
    pub const KEY_LENGTH: u16 = 14;
}

/// Notify message types (errors below 16384, status from 16384).
pub mod notify {
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    pub const INVALID_IKE_SPI: u16 = 4;
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    pub const INVALID_SYNTAX: u16 = 7;
    pub const INVALID_MESSAGE_ID: u16 = 9;
    pub const INVALID_SPI: u16 = 11;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const SINGLE_PAIR_REQUIRED: u16 = 34;
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    pub const INTERNAL_ADDRESS_FAILURE: u16 = 36;
    pub const FAILED_CP_REQUIRED: u16 = 37;
    pub const TS_UNACCEPTABLE: u16 = 38;
    pub const INVALID_SELECTORS: u16 = 39;
    pub const TEMPORARY_FAILURE: u16 = 43;
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    pub const STATE_NOT_FOUND: u16 = 47;
    pub const INITIAL_CONTACT: u16 = 16384;
    pub const SET_WINDOW_SIZE: u16 = 16385;
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    pub const COOKIE: u16 = 16390;
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    pub const REKEY_SA: u16 = 16393;
    /// RFC 6023.
    pub const CHILDLESS_IKEV2_SUPPORTED: u16 = 16418;
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    pub const USE_PPK: u16 = 16435;
    pub const PPK_IDENTITY: u16 = 16436;
    pub const NO_PPK_AUTH: u16 = 16437;
    pub const INTERMEDIATE_EXCHANGE_SUPPORTED: u16 = 16438;
    pub const ADDITIONAL_KEY_EXCHANGE: u16 = 16441;
    pub const USE_PPK_INT: u16 = 16445;
    pub const PPK_IDENTITY_KEY: u16 = 16446;

    /// Error types are 1..16383.
    pub fn is_error(t: u16) -> bool {
        (1..16384).contains(&t)
    }
}

/// Identification types.
pub mod id_type {
    pub const IPV4_ADDR: u8 = 1;
    pub const FQDN: u8 = 2;
    pub const RFC822_ADDR: u8 = 3;
    pub const IPV6_ADDR: u8 = 5;
    pub const KEY_ID: u8 = 11;
}

/// Authentication methods.
pub mod auth_method {
    pub const SHARED_KEY_MIC: u8 = 2;
}

/// Traffic selector types.
pub mod ts_type {
    pub const IPV4_ADDR_RANGE: u8 = 7;
    pub const IPV6_ADDR_RANGE: u8 = 8;
}

/// PPK_ID types (RFC 8784).
pub mod ppk_id_type {
    pub const OPAQUE: u8 = 1;
    pub const FIXED: u8 = 2;
}
