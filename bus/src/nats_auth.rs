//! How a process proves itself to NATS and checks it is talking to the
//! right server: credentials (a `.creds` file with a user JWT and nkey seed,
//! or a user and password, also from the URL `nats://user:pass@host`) and
//! the CA that NATS's TLS certificate must chain to.
//!
//! Every NATS connection of a process (the bus, and the JetStream stores of
//! routers and presence) is made from the same [`NatsFlags`], so they all
//! authenticate as the same service user, whose permissions the server
//! checks (`proto::permissions`, rendered as `deploy/nats/permissions.conf`).

use std::path::PathBuf;

/// The NATS security flags every clustered binary takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NatsFlags {
    /// NATS credentials file: a user JWT and its nkey seed (`.creds`).
    #[arg(long, env = "SB_NATS_CREDS", conflicts_with = "nats_user")]
    pub nats_creds: Option<PathBuf>,

    /// NATS user; or put it in the URL (nats://user:password@host:4222).
    #[arg(long, env = "SB_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,

    /// Password of --nats-user.
    #[arg(long, env = "SB_NATS_PASSWORD", hide_env_values = true, requires = "nats_user")]
    pub nats_password: Option<String>,

    /// PEM CA certificates the NATS server's certificate must chain to; with
    /// it the connection requires TLS.
    #[arg(long, env = "SB_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
}

impl NatsFlags {
    /// `options` with the credentials and TLS settings applied. A missing or
    /// unreadable file is an error naming its flag.
    pub async fn apply(&self, mut options: async_nats::ConnectOptions) -> anyhow::Result<async_nats::ConnectOptions> {
        if let Some(path) = &self.nats_creds {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| anyhow::anyhow!("--nats-creds {}: {e}", path.display()))?;
        }
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(path) = &self.nats_tls_ca {
            // Read now: async-nats would only fail on connecting, retrying forever.
            let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("--nats-tls-ca {}: {e}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                anyhow::bail!("--nats-tls-ca {}: no PEM certificate in it", path.display());
            }
            options = options.add_root_certificates(path.clone()).require_tls(true);
        }
        Ok(options)
    }

    /// A plain client connection to `url` named `name` (the JetStream
    /// stores' own), retrying until NATS is up.
    pub async fn connect(&self, url: &str, name: String) -> anyhow::Result<async_nats::Client> {
        let options = self.apply(async_nats::ConnectOptions::new()).await?;
        Ok(options.name(name).retry_on_initial_connect().max_reconnects(None).connect(url).await?)
    }
}
