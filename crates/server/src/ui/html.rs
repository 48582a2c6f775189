//! The dashboard's HTML: escaping, the page frame, and small builders for
//! the tables every page shows. Pages are written as strings: no template
//! engine, and every value that did not come from this file goes through
//! [`esc`].

use super::Session;
use std::fmt::Write;
use stratus_core::human;

/// `s` safe in HTML text and in a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a query value.
pub fn query_value(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

const NAV: [(&str, &str); 9] = [
    ("/ui/", "Overview"),
    ("/ui/functions", "Functions"),
    ("/ui/invocations", "Invocations"),
    ("/ui/jobs", "Jobs"),
    ("/ui/workers", "Workers"),
    ("/ui/events", "Events"),
    ("/ui/triggers", "Triggers"),
    ("/ui/schedules", "Schedules"),
    ("/ui/settings", "Settings"),
];

/// A whole page: the frame with its navigation, `title`, and `body`.
pub fn page(s: &Session, active: &str, title: &str, body: &str) -> String {
    let mut nav = String::new();
    for (href, name) in NAV {
        let current = if href == active { r#" aria-current="page""# } else { "" };
        let _ = write!(nav, r#"<a href="{href}"{current}>{name}</a>"#);
    }
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} · Stratus</title><link rel="stylesheet" href="/ui/assets/app.css"><link rel="icon" href="/ui/assets/icon.svg"><script src="/ui/assets/app.js" defer></script></head><body><header><a class="brand" href="/ui/">Stratus</a><nav>{nav}</nav><div class="who"><span title="project">{project}</span> · <span title="token">{token}</span> ({role})<form method="post" action="/ui/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Log out</button></form></div></header><main><h1>{title}</h1>{body}</main></body></html>"#,
        title = esc(title),
        project = esc(&s.caller.project),
        token = esc(&s.login),
        role = s.caller.role,
        csrf = s.csrf,
    )
}

/// A page outside the frame (login, errors).
pub fn bare(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{t} · Stratus</title><link rel="stylesheet" href="/ui/assets/app.css"><link rel="icon" href="/ui/assets/icon.svg"></head><body class="bare"><main><h1>{t}</h1>{body}</main></body></html>"#,
        t = esc(title)
    )
}

/// A table with a header row; cells are HTML already.
pub struct Table {
    html: String,
    rows: usize,
}

impl Table {
    pub fn new(id: &str, headers: &[&str]) -> Table {
        let mut html = format!(r#"<table id="{id}"><thead><tr>"#);
        for h in headers {
            let _ = write!(html, "<th>{h}</th>");
        }
        html.push_str("</tr></thead><tbody>");
        Table { html, rows: 0 }
    }

    /// A row; `attrs` go on its `<tr>` (e.g. `data-state="failed"`).
    pub fn row(&mut self, attrs: &str, cells: &[String]) {
        let _ = write!(self.html, "<tr {attrs}>");
        for c in cells {
            let _ = write!(self.html, "<td>{c}</td>");
        }
        self.html.push_str("</tr>");
        self.rows += 1;
    }

    /// The table, or `empty` as a paragraph when it has no rows.
    pub fn finish(self, empty: &str) -> String {
        if self.rows == 0 {
            return format!(r#"<p class="empty">{}</p>"#, esc(empty));
        }
        self.finish_always()
    }

    /// The table, even without rows (one that a page's script fills).
    pub fn finish_always(mut self) -> String {
        self.html.push_str("</tbody></table>");
        self.html
    }
}

/// A state as a coloured badge.
pub fn badge(state: &str) -> String {
    format!(r#"<span class="badge s-{0}">{0}</span>"#, esc(state))
}

/// A time as its age, the date on hover.
pub fn when(ms: i64, now: i64) -> String {
    format!(
        r#"<time datetime="{}" title="{}">{}</time>"#,
        stratus_core::clock::rfc3339(ms),
        human::date(ms),
        human::age(ms, now)
    )
}

pub fn link(href: &str, text: &str) -> String {
    format!(r#"<a href="{}">{}</a>"#, esc(href), esc(text))
}

/// `key: value` pairs as a definition list; values are HTML already.
pub fn facts(pairs: &[(&str, String)]) -> String {
    let mut out = String::from(r#"<dl class="facts">"#);
    for (k, v) in pairs {
        let _ = write!(out, "<dt>{k}</dt><dd>{v}</dd>");
    }
    out.push_str("</dl>");
    out
}

/// At most `max` bytes of `bytes` as text, and whether there was more.
pub fn preview(bytes: &[u8], max: usize) -> String {
    preview_of(&bytes[..bytes.len().min(max)], bytes.len() as u64)
}

/// `head`, the first bytes of `len`, as text, and how much more there is.
pub fn preview_of(head: &[u8], len: u64) -> String {
    let text = String::from_utf8_lossy(head);
    let rest = len.saturating_sub(head.len() as u64);
    let more = if rest > 0 { format!("\n… {} more", human::size(rest)) } else { String::new() };
    format!("<pre>{}{}</pre>", esc(&text), esc(&more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_for_text_attributes_and_queries() {
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(query_value("/ui/jobs?a=b c"), "/ui/jobs%3Fa%3Db%20c");
        assert_eq!(preview(b"abcdef", 3), "<pre>abc\n… 3 B more</pre>");
    }
}
