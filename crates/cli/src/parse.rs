//! Parsers for CLI values: durations, sizes, KEY=VALUE pairs.

pub use stratus_core::clock::duration_ms;

/// Memory in MiB: `128` (MiB), `128M`, `128Mi`, `128MB`, `1G`, `1Gi`, `1GB`.
pub fn memory_mb(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = if let Some(n) =
        lower.strip_suffix("gib").or(lower.strip_suffix("gi")).or(lower.strip_suffix("gb")).or(lower.strip_suffix('g'))
    {
        (n.to_string(), 1024)
    } else if let Some(n) =
        lower.strip_suffix("mib").or(lower.strip_suffix("mi")).or(lower.strip_suffix("mb")).or(lower.strip_suffix('m'))
    {
        (n.to_string(), 1)
    } else {
        (lower.clone(), 1)
    };
    let v: u64 = num.trim().parse().map_err(|_| format!("'{t}' is not a memory size (e.g. 128M, 1G)"))?;
    if v == 0 {
        return Err("memory must be at least 1 MiB".into());
    }
    Ok(v * mult)
}

/// `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// `NAME[=ENV]`: a function's use of a secret.
pub fn secret_ref(s: &str) -> Result<stratus_core::settings::SecretRef, String> {
    stratus_core::settings::SecretRef::parse(s).map_err(|e| e.to_string())
}

pub fn tag(s: &str) -> Result<String, String> {
    stratus_core::validate_tag(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("30s"), Ok(30_000));
        assert_eq!(duration_ms("1.5"), Ok(1500));
        assert_eq!(duration_ms("2m"), Ok(120_000));
        assert!(duration_ms("soon").is_err());
        assert!(duration_ms("0").is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(memory_mb("128"), Ok(128));
        assert_eq!(memory_mb("128Mi"), Ok(128));
        assert_eq!(memory_mb("1G"), Ok(1024));
        assert!(memory_mb("lots").is_err());
        assert!(memory_mb("0").is_err());
    }

    #[test]
    fn kv() {
        assert_eq!(key_value("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(key_value("nope").is_err());
        assert!(key_value("=x").is_err());
    }
}

/// A size in bytes: `4096`, `64K`, `64MiB`, `1G`, `1GB` (binary multiples).
pub fn bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let v: u64 = num.trim().parse().map_err(|_| format!("'{s}' is not a size (e.g. 64MiB, 1G, 4096)"))?;
    if v == 0 {
        return Err("a size must be at least 1 byte".into());
    }
    Ok(v * mult)
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes() {
        assert_eq!(super::bytes("4096"), Ok(4096));
        assert_eq!(super::bytes("64MiB"), Ok(64 << 20));
        assert_eq!(super::bytes("64M"), Ok(64 << 20));
        assert_eq!(super::bytes("1GB"), Ok(1 << 30));
        assert_eq!(super::bytes("2k"), Ok(2048));
        assert!(super::bytes("big").is_err());
    }
}

/// A server's URL as others reach it: `http://HOST:PORT` (or https).
pub fn server_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => Ok(s.trim_end_matches('/').to_string()),
        _ => Err(format!("'{s}' is not a server URL: give http://HOST:PORT")),
    }
}

/// The address to listen on: `HOST:PORT`. A bare port or host gets an
/// answer that shows the form.
pub fn listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        let example = match s.trim().parse::<u16>() {
            Ok(port) => format!("127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every interface)"),
            Err(_) => "127.0.0.1:7878".into(),
        };
        format!("'{s}' is not HOST:PORT; give e.g. {example}")
    })
}

#[cfg(test)]
mod listen_tests {
    #[test]
    fn listen_addresses() {
        assert_eq!(super::listen_addr("127.0.0.1:0").unwrap().port(), 0);
        let e = super::listen_addr("7878").unwrap_err();
        assert!(e.contains("127.0.0.1:7878") && e.contains("0.0.0.0:7878"), "{e}");
        assert!(super::listen_addr("localhost").unwrap_err().contains("HOST:PORT"));
    }
}
