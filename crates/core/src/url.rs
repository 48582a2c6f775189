//! Backend URLs as they may be shown: in logs, errors and `stratus` output.

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] =
    &["password", "secret_access_key", "session_token", "token", "secret", "access_key_secret"];

/// The URL without its secrets: the password of the authority
/// (`user:***@host`) and the values of secret query parameters
/// (`password`, `secret_access_key`, `session_token`, ...).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}:***@{host}")
        }
        _ => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn secrets_are_hidden() {
        assert_eq!(redact("postgres://u:secret@h:5432/db?x=1"), "postgres://u:***@h:5432/db?x=1");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgresql://h/db"), "postgresql://h/db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=pw&schema=s"),
            "postgres://h/db?user=u&password=***&schema=s"
        );
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(
            redact("s3://b/p?endpoint=http://h:9000&access_key_id=AK&secret_access_key=SK"),
            "s3://b/p?endpoint=http://h:9000&access_key_id=AK&secret_access_key=***"
        );
        assert_eq!(redact("file:///data/objects"), "file:///data/objects");
        assert_eq!(redact("not a url"), "not a url");
    }
}
