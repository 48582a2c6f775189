//! A minimal HTTP/1.1 keep-alive client, so that the client's own cost stays
//! out of the round-trip figures.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// The token to send to each node, by URL (nodes built before tokens
/// existed have none and ignore the header).
static TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// From now on, requests to `url` carry `token`.
pub fn use_token(url: &str, token: &str) {
    TOKENS.lock().unwrap().push((url.trim_end_matches('/').to_string(), token.to_string()));
}

pub fn last_token() -> Option<String> {
    TOKENS.lock().unwrap().last().map(|(_, t)| t.clone())
}

pub fn token_for(url: &str) -> Option<String> {
    let url = url.trim_end_matches('/');
    TOKENS.lock().unwrap().iter().rev().find(|(u, _)| u == url).map(|(_, t)| t.clone())
}

pub struct Conn {
    host: String,
    /// The `authorization` header line, or nothing.
    auth: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Conn {
    pub fn open(url: &str) -> Result<Conn> {
        let host = url.trim_start_matches("http://").trim_end_matches('/').to_string();
        let s = TcpStream::connect(&host).with_context(|| format!("connect {host}"))?;
        s.set_nodelay(true)?;
        let auth = token_for(url).map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
        Ok(Conn { host, auth, reader: BufReader::new(s.try_clone()?), writer: s })
    }

    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{}content-length: {}\r\n\r\n",
            self.host,
            self.auth,
            body.len()
        );
        let mut buf = head.into_bytes();
        buf.extend_from_slice(body);
        self.writer.write_all(&buf)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line.split(' ').nth(1).context("status line")?.parse()?;
        let mut len = None;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = Some(v.trim().parse::<usize>()?);
            }
        }
        let Some(len) = len else { bail!("response without content-length") };
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Response { status, body })
    }
}
