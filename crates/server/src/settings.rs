//! The server's side of variables and secrets: the keys secrets are sealed
//! with, the values an attempt reads ([`resolve`]), and sealing every
//! secret again under a new key ([`reseal`]).

use crate::node::NodeError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stratus_core::api::SettingValue;
use stratus_core::change::ChangeSet;
use stratus_core::settings::{SecretKey, SecretKeys};
use stratus_core::trust::{AuditEntry, TrustChange};
use stratus_core::{Clock, Failure, FailureKind, Function, Task};
use stratus_store::StateStore;

/// The file a single node draws its key into when no `--secret-key-file`
/// is given.
pub const KEY_FILE: &str = "secret.key";

/// The keys from `key_file` (or the data directory's own, drawn on first
/// start, 0600) and `previous` (keys secrets may still be sealed with).
pub fn load_keys(data_dir: &Path, key_file: Option<&Path>, previous: &[PathBuf]) -> Result<SecretKeys, NodeError> {
    let read = |path: &Path| -> Result<SecretKey, NodeError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| NodeError::SecretKey(path.to_path_buf(), e.to_string()))?;
        SecretKey::parse(&text).map_err(|e| NodeError::SecretKey(path.to_path_buf(), e.to_string()))
    };
    let current = match key_file {
        Some(path) => read(path)?,
        None => {
            let path = data_dir.join(KEY_FILE);
            if !path.exists() {
                let key = SecretKey::random();
                write_new(&path, &key.to_hex()).map_err(|e| NodeError::SecretKey(path.clone(), e.to_string()))?;
                tracing::info!(file = %path.display(), key = key.id(), "drew the key secrets are sealed with");
            }
            read(&path)?
        }
    };
    let previous = previous.iter().map(|p| read(p)).collect::<Result<Vec<_>, _>>()?;
    Ok(SecretKeys { current, previous })
}

fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()
}

/// The values `f`'s attempt reads: its variables, then its secrets opened.
/// A variable or secret that is not set fails the attempt, naming it.
pub async fn resolve(store: &dyn StateStore, keys: &SecretKeys, f: &Function) -> Result<Vec<SettingValue>, Failure> {
    let fail = |msg: String| Failure::new(FailureKind::Internal, msg);
    let unreachable = |e: stratus_store::Error| Failure::new(FailureKind::Lost, format!("cannot read settings: {e}"));
    let mut out = Vec::with_capacity(f.spec.vars.len() + f.spec.secrets.len());
    if !f.spec.vars.is_empty() {
        let vars = store.variables(&f.project).await.map_err(unreachable)?;
        for name in &f.spec.vars {
            let v = vars.iter().find(|v| &v.name == name).ok_or_else(|| {
                fail(format!("variable '{name}' is not set in project '{}': stratus var set {name} VALUE", f.project))
            })?;
            out.push(SettingValue { name: name.clone(), value: v.value.clone(), secret: false });
        }
    }
    if !f.spec.secrets.is_empty() {
        let secrets = store.secrets(Some(&f.project)).await.map_err(unreachable)?;
        for r in &f.spec.secrets {
            let (_, s) = secrets.iter().find(|(_, s)| s.name == r.name).ok_or_else(|| {
                fail(format!(
                    "secret '{}' is not set in project '{}': stratus secret set {} -",
                    r.name, f.project, r.name
                ))
            })?;
            let value = keys.open(&f.project, s).map_err(|e| fail(e.to_string()))?;
            let value = String::from_utf8(value).map_err(|_| fail(format!("secret '{}' is not text", r.name)))?;
            out.push(SettingValue { name: r.env.clone(), value, secret: true });
        }
    }
    Ok(out)
}

/// The settings of the server's own slots' attempts, read from the store.
pub struct StoreSettings {
    pub store: Arc<dyn StateStore>,
    pub keys: Arc<SecretKeys>,
}

#[async_trait::async_trait]
impl stratus_worker::SettingsSource for StoreSettings {
    async fn settings(&self, task: &Task) -> Result<stratus_worker::AttemptSettings, Failure> {
        Ok(resolve(&*self.store, &self.keys, &task.function).await?.into())
    }
}

/// Seals every secret not sealed with the current key again under it, each
/// with an audit entry, so that older keys can be retired. Run by the
/// leading server when it takes the lead; a secret changed meanwhile is
/// left (its new seal is under the current key already). Returns how many
/// it sealed again.
pub async fn reseal(
    store: &dyn StateStore,
    keys: &SecretKeys,
    clock: &dyn Clock,
) -> Result<usize, stratus_store::Error> {
    let mut n = 0;
    for (project, s) in store.secrets(None).await? {
        if s.sealed.key_id == keys.current.id() {
            continue;
        }
        let value = match keys.open(&project, &s) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%project, secret = %s.name, error = %e, "cannot seal a secret again");
                continue;
            }
        };
        let sealed = keys.current.seal(&project, &s.name, s.version, &value);
        let at = clock.now_ms();
        let audit = AuditEntry {
            id: stratus_core::new_id(),
            at,
            actor: "-".into(),
            project: project.clone(),
            action: "secret.reseal".into(),
            target: s.name.clone(),
        };
        let change = TrustChange::Reseal { project, name: s.name, version: s.version, sealed };
        let set = ChangeSet { trust: vec![change], audit: vec![audit], ..Default::default() };
        if store.commit(set).await?.trust.first().copied().unwrap_or(false) {
            n += 1;
        }
    }
    Ok(n)
}
