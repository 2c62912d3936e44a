//! Certificates made in the test with rcgen: a CA and the leaf
//! certificates it signs, written as PEM files under a temporary directory.

use std::path::PathBuf;
use std::sync::Arc;

pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
    dir: PathBuf,
}

/// A leaf certificate's files.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    /// A new CA whose files go under a fresh directory named after `name`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sb-pki-{name}-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("switchboard test CA {name}"));
        let pem = params.self_signed(&key).unwrap().pem();
        std::fs::write(dir.join("ca.pem"), &pem).unwrap();
        Self { issuer: rcgen::Issuer::new(params, key), pem, dir }
    }

    /// The CA certificate's file.
    pub fn file(&self) -> String {
        self.dir.join("ca.pem").to_str().unwrap().to_owned()
    }

    /// A certificate for 127.0.0.1 and localhost, valid from yesterday for
    /// `days` days (negative: already expired), as `<name>.pem` and `<name>.key`.
    pub fn leaf(&self, name: &str, days: i64) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let at = |secs: i64| rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(secs as u64);
        if days < 0 {
            params.not_before = at(now - 10 * 86_400);
            params.not_after = at(now + days * 86_400);
        } else {
            params.not_before = at(now - 86_400);
            params.not_after = at(now + days * 86_400);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{name}.pem")).to_str().unwrap().to_owned(),
            key: self.dir.join(format!("{name}.key")).to_str().unwrap().to_owned(),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    /// A TLS client configuration that trusts this CA alone.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        loadtest::client::tls_trusting(self.pem.as_bytes()).unwrap()
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
