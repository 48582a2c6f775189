//! The CLI's credentials file: one token per server URL, so that
//! `stratus login URL` (or the first `stratus up`) is all a user does once.
//! It is `$STRATUS_CREDENTIALS`, else `$XDG_CONFIG_HOME/stratus/credentials.toml`,
//! else `~/.config/stratus/credentials.toml`; written with mode 0600.
//!
//! ```toml
//! [tokens]
//! "http://127.0.0.1:7878" = "stratus_…"
//! ```

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: BTreeMap<String, String>,
}

pub fn path() -> Option<PathBuf> {
    let env = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = env("STRATUS_CREDENTIALS") {
        return Some(p);
    }
    let config = env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|h| h.join(".config")))?;
    Some(config.join("stratus").join("credentials.toml"))
}

fn key(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

fn read() -> anyhow::Result<File> {
    let Some(p) = path() else { return Ok(File::default()) };
    match std::fs::read_to_string(&p) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("credentials file {}: {}", p.display(), e.message()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(e).with_context(|| format!("credentials file {}", p.display())),
    }
}

/// The token stored for `url`, if any.
pub fn token_for(url: &str) -> anyhow::Result<Option<String>> {
    Ok(read()?.tokens.remove(&key(url)))
}

/// Stores `token` for `url`, keeping the others; returns the file.
pub fn store(url: &str, token: &str) -> anyhow::Result<PathBuf> {
    let p = path().ok_or_else(|| anyhow::anyhow!("no credentials file: set HOME or STRATUS_CREDENTIALS"))?;
    let mut file = read()?;
    file.tokens.insert(key(url), token.trim().to_string());
    let mut text =
        String::from("# Stratus API tokens by server URL; written by `stratus login` and `stratus up`.\n[tokens]\n");
    for (u, t) in &file.tokens {
        text.push_str(&format!("{} = {}\n", quote(u), quote(t)));
    }
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written beside and renamed over, so a reader never sees half a file.
    let tmp = p.with_extension("toml.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_per_url_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c/credentials.toml");
        // SAFETY: this test is the only one in the binary to read or set it.
        unsafe { std::env::set_var("STRATUS_CREDENTIALS", &p) };
        assert_eq!(token_for("http://a:1").unwrap(), None);
        store("http://a:1/", "t1").unwrap();
        store("http://b:2", "t\"2").unwrap();
        store("http://a:1", "t3").unwrap();
        assert_eq!(token_for("http://a:1").unwrap().as_deref(), Some("t3"));
        assert_eq!(token_for("http://b:2/").unwrap().as_deref(), Some("t\"2"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
