//! Which browser pages may drive the API. A page on another site can send
//! requests to a server on the visitor's machine or network (a form post, a
//! `fetch` in `no-cors` mode), and a site whose name is made to resolve to
//! such a server's address (DNS rebinding) can even read the answers. So a
//! request is refused when its `Origin` is not the server's own or one
//! allowed with `--allowed-origin`, and when its `Host` is a name the
//! server does not answer to: an IP address, `localhost`, this machine's
//! host name, the advertised host, and the hosts of allowed origins are
//! the names it answers to.

use crate::error::ApiError;
use axum::http::{HeaderMap, header};
use std::collections::HashSet;

pub struct Origins {
    any: bool,
    /// `scheme://host[:port]`, lowercase.
    origins: HashSet<String>,
    hosts: HashSet<String>,
}

impl Origins {
    /// From `--allowed-origin` values: `scheme://host[:port]`, or `*` for any.
    pub fn new(allowed: &[String]) -> Result<Origins, crate::node::NodeError> {
        let mut o = Origins { any: false, origins: HashSet::new(), hosts: HashSet::new() };
        o.hosts.insert("localhost".into());
        if let Some(h) = hostname() {
            o.hosts.insert(h.to_ascii_lowercase());
        }
        for a in allowed {
            if a == "*" {
                o.any = true;
                continue;
            }
            let bad = |why: &str| crate::node::NodeError::Origin(a.clone(), why.into());
            let rest = a
                .strip_prefix("http://")
                .or_else(|| a.strip_prefix("https://"))
                .ok_or_else(|| bad("an origin is http:// or https:// and a host, e.g. https://dash.example.com"))?;
            if rest.is_empty() || rest.contains('/') {
                return Err(bad("an origin has no path, e.g. https://dash.example.com:8443"));
            }
            o.origins.insert(a.to_ascii_lowercase());
            o.hosts.insert(host_of(rest).to_ascii_lowercase());
        }
        Ok(o)
    }

    /// Also answers to `host` (the advertised URL's).
    pub fn allow_host(&mut self, host: &str) {
        self.hosts.insert(host.to_ascii_lowercase());
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.any {
            return Ok(());
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let name = host_of(host).to_ascii_lowercase();
        if !host.is_empty()
            && !self.hosts.contains(&name)
            && name.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_err()
        {
            return Err(ApiError::Forbidden(format!(
                "this server does not answer to the host name '{name}'; allow it with --allowed-origin"
            )));
        }
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
        let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
        let own = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"))
            == Some(&*host.to_ascii_lowercase());
        if own || self.origins.contains(&origin) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "requests from pages of origin '{origin}' are refused; allow it with --allowed-origin"
        )))
    }
}

/// The host of `host[:port]`, with an IPv6 address in brackets kept whole.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // what fits.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    String::from_utf8(buf[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn check(o: &Origins, host: &str, origin: Option<&str>) -> bool {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(v) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(v).unwrap());
        }
        o.check(&h).is_ok()
    }

    #[test]
    fn pages_of_other_sites_and_rebound_names_are_refused() {
        let o = Origins::new(&["https://dash.example.com".into()]).unwrap();
        assert!(check(&o, "127.0.0.1:7878", None));
        assert!(check(&o, "[::1]:7878", None));
        assert!(check(&o, "localhost:7878", Some("http://localhost:7878")), "the server's own pages");
        assert!(check(&o, "10.0.0.5:7878", Some("https://dash.example.com")));
        assert!(check(&o, "dash.example.com", None));
        assert!(!check(&o, "127.0.0.1:7878", Some("http://evil.example")));
        assert!(!check(&o, "127.0.0.1:7878", Some("null")));
        assert!(!check(&o, "evil.example:7878", None), "DNS rebinding");
        let any = Origins::new(&["*".into()]).unwrap();
        assert!(check(&any, "evil.example:7878", Some("http://evil.example")));
        assert!(Origins::new(&["dash.example.com".into()]).is_err());
        assert!(Origins::new(&["https://dash.example.com/app".into()]).is_err());
    }
}
