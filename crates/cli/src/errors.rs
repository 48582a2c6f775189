//! Errors as the user sees them: one line `error: WHAT (HINT)`, or with
//! `--json` the envelope `{"error": {"code", "message"}}` on stderr. The
//! code is the server's own when the server refused the request.

use serde_json::json;
use stratus_client::Error as ClientError;

/// An error the CLI finds itself, with a code for `--json`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub code: &'static str,
    pub message: String,
}

/// `Err(CliError)` with code `invalid_input`.
pub fn invalid(message: impl Into<String>) -> anyhow::Error {
    CliError { code: "invalid_input", message: message.into() }.into()
}

/// What went wrong, as a code and a one-line message with a hint where one
/// helps. `server` is the URL the client talked to.
pub fn describe(e: &anyhow::Error, server: &str) -> (String, String) {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CliError>() {
            return (c.code.into(), c.message.clone());
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return client(c, server);
        }
    }
    ("invalid_input".into(), one_line(e))
}

fn client(e: &ClientError, server: &str) -> (String, String) {
    match e {
        ClientError::Connect { url, source } => (
            "unreachable".into(),
            format!(
                "cannot reach the Stratus server at {url} ({}); start `stratus up` or set STRATUS_URL",
                root_cause(source)
            ),
        ),
        // A body that is not the JSON error envelope: not a Stratus server.
        ClientError::Api { status, code, .. } if code == "http" => (
            "not_stratus".into(),
            format!("{server} answered HTTP {status} without a Stratus error; is STRATUS_URL a Stratus server?"),
        ),
        ClientError::Api { code, message, .. } => (code.clone(), message.clone()),
        ClientError::Protocol(m) => {
            ("not_stratus".into(), format!("unexpected answer from {server} ({m}); is STRATUS_URL a Stratus server?"))
        }
        ClientError::Http(h) => ("http".into(), format!("talking to {server}: {}", root_cause(h))),
        ClientError::FunctionFailed { invocation, message, .. } => (
            "function_failed".into(),
            format!("invocation {} of {} {}: {message}", invocation.id, invocation.function, invocation.state),
        ),
    }
}

/// The innermost cause: for a connection error, "Connection refused (os
/// error 111)" rather than three layers of wrapping.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The error chain on one line, each cause once.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Prints the error: the JSON envelope (with `extra` fields beside it) or
/// one `error:` line.
pub fn print(code: &str, message: &str, json: bool, extra: Option<serde_json::Value>) {
    if json {
        let mut v = json!({"error": {"code": code, "message": message}});
        if let Some(serde_json::Value::Object(m)) = extra {
            for (k, x) in m {
                v[k] = x;
            }
        }
        eprintln!("{v}");
    } else {
        eprintln!("error: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_code_is_kept_and_a_foreign_body_is_named() {
        let api = ClientError::Api { status: 404, code: "not_found".into(), message: "function 'x' not found".into() };
        assert_eq!(
            describe(&api.into(), "http://h:1"),
            ("not_found".to_string(), "function 'x' not found".to_string())
        );
        let foreign = ClientError::Api { status: 404, code: "http".into(), message: "<html>".into() };
        let (code, message) = describe(&foreign.into(), "http://h:1");
        assert_eq!(code, "not_stratus");
        assert!(message.contains("http://h:1 answered HTTP 404"), "{message}");
        let (code, message) = describe(&anyhow::anyhow!("inner").context("outer"), "");
        assert_eq!((code.as_str(), message.as_str()), ("invalid_input", "outer: inner"));
    }
}
