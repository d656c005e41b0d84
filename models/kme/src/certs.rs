//! A test PKI for live key managers (`qsafe kme --make-certs DIR`): one CA, a server
//! certificate per KME (valid for the names and addresses it is reached at) and a
//! client certificate per SAE whose common name is the SAE ID, which is how a KME
//! knows who is calling (ETSI GS QKD 014 takes the caller's SAE ID from its
//! certificate). Keys are ECDSA P-256 from the OS generator: live material, not
//! simulation.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// Where `make` puts a KME's or an SAE's certificate and key in `dir`.
pub fn paths(dir: &Path, role: Role, name: &str) -> (PathBuf, PathBuf) {
    let stem = match role {
        Role::Kme => format!("server-{name}"),
        Role::Sae => format!("sae-{name}"),
    };
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

/// The CA certificate's path in `dir`.
pub fn ca_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A key manager's server certificate.
    Kme,
    /// A key consumer's (gateway's) client certificate.
    Sae,
}

fn named(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "qsafe test PKI");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(|e| Error::Io(path.display().to_string(), e))
}

/// Writes `ca.pem`, `server-NAME.pem`/`.key` for every KME (valid for `localhost`,
/// 127.0.0.1, ::1, the KME's name and `hosts`) and `sae-NAME.pem`/`.key` for every
/// SAE into `dir`. Returns the files written.
pub fn make(
    dir: &Path,
    kmes: &[&str],
    saes: &[&str],
    hosts: &[&str],
) -> Result<Vec<PathBuf>, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
    let mut ca = named("qsafe test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut written = vec![ca_path(dir)];
    write(&written[0], &ca_cert.pem())?;
    let mut issue = |role: Role, name: &str| -> Result<(), Error> {
        let mut p = match role {
            Role::Kme => {
                let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
                names.push(name.to_string());
                names.extend(hosts.iter().map(|h| h.to_string()));
                let mut p = CertificateParams::new(names)?;
                p.distinguished_name = named(name).distinguished_name;
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                p
            }
            Role::Sae => {
                let mut p = named(name);
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p
            }
        };
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = paths(dir, role, name);
        write(&cert_path, &cert.pem())?;
        write(&key_path, &key.serialize_pem())?;
        written.extend([cert_path, key_path]);
        Ok(())
    };
    for k in kmes {
        issue(Role::Kme, k)?;
    }
    for s in saes {
        issue(Role::Sae, s)?;
    }
    Ok(written)
}
