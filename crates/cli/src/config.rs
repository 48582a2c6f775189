//! `stratus.toml`: settings for `up`, `server`, `worker` and `migrate`, read
//! from `--config FILE` (or `STRATUS_CONFIG`). A flag or an environment
//! variable wins over the file; the file wins over the built-in default.
//! Every key is documented in `docs/configuration.md`.

use anyhow::Context as _;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub state: Option<String>,
    pub objects: Option<String>,
    pub broker: Option<String>,
    pub broker_queue: Option<String>,
    pub delivery_limit: Option<u32>,
    /// `up` only: local worker slots (0: none, remote workers only).
    pub slots: Option<usize>,
    pub lease_timeout: Option<String>,
    pub max_body: Option<String>,
    pub advertise: Option<String>,
    /// Serve without tokens (loopback only).
    pub insecure_no_auth: Option<bool>,
    /// Web origins whose pages may call the API.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The key secrets are sealed with.
    pub secret_key_file: Option<PathBuf>,
    /// Keys secrets may still be sealed with.
    #[serde(default)]
    pub previous_secret_key_files: Vec<PathBuf>,
    /// The token `/metrics` requires.
    pub metrics_token_file: Option<PathBuf>,
    #[serde(default)]
    pub worker: WorkerConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The server a worker joins.
    pub server: Option<String>,
    pub slots: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub name: Option<String>,
}

impl FileConfig {
    /// Reads and checks the file; an unreadable file, bad TOML, an unknown
    /// key or a bad value is an error that names the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
        let config: FileConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))?;
        // Check the values parsed later now, so a mistake is reported at once.
        if let Some(d) = &config.lease_timeout {
            crate::parse::duration_ms(d)
                .map_err(|e| anyhow::anyhow!("config file {}: lease_timeout: {e}", path.display()))?;
        }
        if let Some(m) = &config.max_body {
            crate::parse::memory_mb(m).map_err(|e| anyhow::anyhow!("config file {}: max_body: {e}", path.display()))?;
        }
        if let Some(u) = &config.advertise {
            crate::parse::server_url(u)
                .map_err(|e| anyhow::anyhow!("config file {}: advertise: {e}", path.display()))?;
        }
        if config.delivery_limit.is_some_and(|n| !(1..=1000).contains(&n)) {
            anyhow::bail!("config file {}: delivery_limit must be from 1 to 1000", path.display());
        }
        if config.worker.slots == Some(0) {
            anyhow::bail!("config file {}: worker.slots must be at least 1", path.display());
        }
        Ok(config)
    }

    pub fn lease_timeout_ms(&self) -> Option<u64> {
        self.lease_timeout.as_deref().and_then(|d| crate::parse::duration_ms(d).ok())
    }

    pub fn max_body_mb(&self) -> Option<u64> {
        self.max_body.as_deref().and_then(|m| crate::parse::memory_mb(m).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<FileConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.toml");
        std::fs::write(&path, text).unwrap();
        FileConfig::load(&path)
    }

    #[test]
    fn reads_every_key() {
        let c = load(
            r#"
            listen = "0.0.0.0:9000"
            data_dir = "/var/lib/stratus"
            state = "postgres://stratus@db/stratus"
            objects = "s3://b?endpoint=http://s3:9000"
            broker = "amqp://guest:guest@mq:5672/%2f"
            broker_queue = "team-a.work"
            delivery_limit = 3
            slots = 3
            lease_timeout = "30s"
            max_body = "1G"
            insecure_no_auth = false
            allowed_origins = ["https://dash.example.com"]
            [worker]
            server = "http://control:7878"
            slots = 8
            data_dir = "/var/cache/stratus"
            name = "gpu-1"
            "#,
        )
        .unwrap();
        assert_eq!(c.listen, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(c.state.as_deref(), Some("postgres://stratus@db/stratus"));
        assert_eq!((c.lease_timeout_ms(), c.max_body_mb(), c.slots), (Some(30_000), Some(1024), Some(3)));
        assert_eq!(c.broker.as_deref(), Some("amqp://guest:guest@mq:5672/%2f"));
        assert_eq!((c.broker_queue.as_deref(), c.delivery_limit), (Some("team-a.work"), Some(3)));
        assert_eq!(c.worker.server.as_deref(), Some("http://control:7878"));
        assert_eq!((c.insecure_no_auth, c.allowed_origins.len()), (Some(false), 1));
        assert_eq!((c.worker.slots, c.worker.name.as_deref()), (Some(8), Some("gpu-1")));
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, says) in [
            ("stat = 'x'", "unknown field `stat`"),
            ("listen = 'nowhere'", "invalid socket address"),
            ("lease_timeout = 'soon'", "lease_timeout"),
            ("max_body = '0'", "max_body"),
            ("[worker]\nslots = 0", "worker.slots"),
            ("delivery_limit = 0", "delivery_limit"),
            ("slots = -1", "invalid value"),
            ("listen = ", ""),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains("stratus.toml"), "{text}: {e}");
            assert!(e.to_lowercase().contains(&says.to_lowercase()), "{text}: {e}");
        }
        assert!(FileConfig::load(Path::new("/nonexistent/stratus.toml")).is_err());
    }
}
