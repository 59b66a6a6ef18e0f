//! The processor's OpenDSR identity: an RSA key and the X.509 certificate for its domain,
//! with which oubli signs its OpenDSR answers and status callbacks (`X-OpenDSR-Signature`:
//! RSASSA-PKCS1-v1_5 with SHA-256 over the body's bytes, in base64), as the specification
//! and its implementations do. Controllers fetch the certificate from the address the
//! discovery names.
//!
//! The pair is the operator's (`opendsr_certificate`, `opendsr_key`: issued by an
//! authority controllers trust), or else made on first use, self-signed, and kept in the
//! data folder (the key with mode 0600) so that it stays the same across restarts.

use anyhow::Context;
use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use sha2::Sha256;
use std::path::Path;

/// The key and certificate oubli signs OpenDSR messages with.
pub struct Processor {
    /// The domain the certificate is for: `X-OpenDSR-Processor-Domain`.
    pub domain: String,
    /// The certificate, PEM.
    pub certificate: String,
    /// Whether oubli made it (self-signed) rather than the operator.
    pub self_signed: bool,
    key: SigningKey<Sha256>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("domain", &self.domain)
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

impl Processor {
    /// The base64 signature of `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.sign(body).to_bytes())
    }

    /// Loads the operator's pair, or the one made earlier in `data_dir`, or makes one
    /// (a 2048-bit key: a second or so; call it off the async threads).
    ///
    /// # Errors
    /// When a file cannot be read or written, or does not hold what it should.
    pub fn load(
        domain: &str,
        configured: Option<(&Path, &Path)>,
        data_dir: &Path,
    ) -> anyhow::Result<Processor> {
        if let Some((certificate, key)) = configured {
            let certificate = std::fs::read_to_string(certificate).with_context(|| {
                format!("opendsr_certificate: reading {}", certificate.display())
            })?;
            anyhow::ensure!(
                certificate.contains("-----BEGIN CERTIFICATE-----"),
                "opendsr_certificate: not a PEM certificate"
            );
            let key_pem = std::fs::read_to_string(key)
                .with_context(|| format!("opendsr_key: reading {}", key.display()))?;
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(&key_pem)
                .or_else(|_| {
                    <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_pem(
                        &key_pem,
                    )
                })
                .map_err(|e| anyhow::anyhow!("opendsr_key: not an RSA private key in PEM: {e}"))?;
            return Ok(Processor {
                domain: domain.to_owned(),
                certificate,
                self_signed: false,
                key: SigningKey::new(key),
            });
        }
        let key_path = data_dir.join("opendsr-key.pem");
        let certificate_path = data_dir.join("opendsr-certificate.pem");
        let key_pem = match std::fs::read_to_string(&key_path) {
            Ok(pem) => pem,
            Err(_) => {
                let fresh = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                    .context("making the OpenDSR key")?;
                let pem = fresh
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| anyhow::anyhow!("encoding the OpenDSR key: {e}"))?;
                // Processes racing here all keep the one written first.
                String::from_utf8(super::files::read_or_create(&key_path, pem.as_bytes())?)
                    .context("the OpenDSR key file is not text")?
            }
        };
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&key_pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
        // The certificate is made again when it is missing or names another domain.
        let certificate = match std::fs::read_to_string(&certificate_path) {
            Ok(pem)
                if std::fs::read_to_string(certificate_path.with_extension("domain"))
                    .is_ok_and(|d| d == domain) =>
            {
                pem
            }
            _ => {
                let pair =
                    rcgen::KeyPair::from_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)
                        .context("reading the OpenDSR key for its certificate")?;
                let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])
                    .context("the OpenDSR domain")?;
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, domain);
                params.not_before = rcgen::date_time_ymd(2024, 1, 1);
                params.not_after = rcgen::date_time_ymd(2036, 1, 1);
                let pem = params
                    .self_signed(&pair)
                    .context("making the OpenDSR certificate")?
                    .pem();
                super::files::write_private(&certificate_path, pem.as_bytes())?;
                super::files::write_private(
                    &certificate_path.with_extension("domain"),
                    domain.as_bytes(),
                )?;
                pem
            }
        };
        Ok(Processor {
            domain: domain.to_owned(),
            certificate,
            self_signed: true,
            key: SigningKey::new(key),
        })
    }
}
