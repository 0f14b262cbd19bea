//! Security by default: a CA and a serving certificate in the data dir, a bearer token, and the
//! kubeconfig that carries both to clients.

use std::{net::IpAddr, path::Path, sync::Arc};

use anyhow::Context;
use rand::RngCore;

/// What clients need to trust and authenticate to the server.
pub struct Credentials {
    pub ca_pem: String,
    pub token: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Loads or creates `pki/ca.{crt,key}` and `token` under `data_dir`, and issues a fresh serving
/// certificate for `hosts` (names and IPs) signed by that CA.
pub fn load_or_create(data_dir: &Path, hosts: &[String]) -> anyhow::Result<Credentials> {
    let pki = data_dir.join("pki");
    std::fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;
    let ca_crt = pki.join("ca.crt");
    let ca_key = pki.join("ca.key");
    let (ca_cert_pem, ca_key_pem) = if ca_crt.exists() && ca_key.exists() {
        (std::fs::read_to_string(&ca_crt)?, std::fs::read_to_string(&ca_key)?)
    } else {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "svcnet-ca");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign, rcgen::KeyUsagePurpose::DigitalSignature];
        params.not_after = rcgen::date_time_ymd(2125, 1, 1);
        let cert = params.self_signed(&key)?;
        let (c, k) = (cert.pem(), key.serialize_pem());
        write_private(&ca_key, &k)?;
        std::fs::write(&ca_crt, &c)?;
        (c, k)
    };
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)?;

    let serving_key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "svcnet-apiserver");
    for h in hosts {
        let san = match h.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(h.clone().try_into()?),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let serving = params.signed_by(&serving_key, &issuer)?;

    let token_path = data_dir.join("token");
    let token = match std::fs::read_to_string(&token_path) {
        Ok(t) if t.trim().len() >= 43 => t.trim().to_string(),
        _ => {
            // 256 random bits, hex encoded.
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&token_path, &t)?;
            t
        }
    };

    let chain = vec![rustls::pki_types::CertificateDer::from(serving.der().to_vec())];
    let key = rustls::pki_types::PrivateKeyDer::try_from(serving_key.serialize_der()).map_err(|e| anyhow::anyhow!(e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config =
        rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_no_client_auth().with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Credentials { ca_pem: ca_cert_pem, token, server_config: Arc::new(config) })
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// A kubeconfig for `server` (an `https://` URL) with the CA and the token inline.
pub fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: svcnet
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: svcnet-admin
  user:
    token: {token}
contexts:
- name: svcnet
  context:
    cluster: svcnet
    user: svcnet-admin
    namespace: default
current-context: svcnet
"
    )
}

/// Writes the kubeconfig readable only by its owner, atomically (write then rename).
pub fn write_kubeconfig(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    write_private(&tmp, contents)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
