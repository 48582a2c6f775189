//! The dashboard against the real server, over plain HTTP: logging in with
//! `stratus dashboard`'s single-use link or a pasted token, the session
//! cookie and what it may do, and every page answering for the project.
//! (`scripts/ui-tests.sh` drives the same pages in a real browser.)

mod common;
use common::*;
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;

fn browser() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

/// The session secret a login answer sets, after checking the cookie's flags.
fn session_cookie(res: &Response) -> String {
    let set = res.headers().get("set-cookie").expect("a login sets a cookie").to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
    set.split(';').next().unwrap().strip_prefix("stratus_session=").expect("the session cookie").to_string()
}

fn get(url: &str, cookie: Option<&str>) -> Response {
    let mut req = browser().get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("stratus_session={c}"));
    }
    req.send().unwrap()
}

/// A form post, as a browser sends it: urlencoded, with `headers`.
fn post_form(url: &str, headers: &[(&str, String)], pairs: &[(&str, &str)]) -> Response {
    let enc = |v: &str| -> String {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
    let mut req = browser().post(url).header("content-type", "application/x-www-form-urlencoded").body(body.join("&"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().unwrap()
}

fn location(res: &Response) -> String {
    res.headers().get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default()
}

/// The value of the first `name="csrf" value="…"` in a page.
fn csrf(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + 19;
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

#[test]
fn a_login_link_works_once_and_its_session_reads_but_does_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let u = &s.url;
    s.ok(&["fn", "deploy", "t", "--wasm", guest_wasm().to_str().unwrap()]);
    let inputs = inputs_file(tmp.path(), 12);
    let job = s.ok(&["map", "t", "--inputs", inputs.to_str().unwrap(), "--detach"]).trim().to_string();
    assert_eq!(s.get_json(&format!("/v1/jobs/{job}?wait=60"))["state"], "succeeded");

    // Not logged in: pages send to the login page, and come back after.
    let res = get(&format!("{u}/ui/jobs"), None);
    assert_eq!((res.status().as_u16(), location(&res)), (303, "/ui/login?next=/ui/jobs".to_string()));
    assert_eq!(location(&get(&format!("{u}/"), None)), "/ui/");
    let login = get(&format!("{u}/ui/login"), None);
    assert_eq!(login.status(), 200);
    assert!(login.text().unwrap().contains(r#"name="token""#));

    let link = s.ok(&["dashboard", "--next", &format!("/ui/jobs/{job}")]).trim().to_string();
    assert!(link.starts_with(&format!("{u}/ui/login?code=")), "{link}");
    assert!(!link.contains(&s.token), "a token never goes into the link");
    let res = get(&link, None);
    assert_eq!(res.status(), 200);
    let session = session_cookie(&res);
    assert!(res.text().unwrap().contains(&format!("url=/ui/jobs/{job}")), "goes on to --next");
    let again = get(&link, None);
    assert_eq!(again.status(), 401, "a code is single use");
    assert!(again.headers().get("set-cookie").is_none());

    // The job's page: one bar per task, the histogram holding every task.
    let page = get(&format!("{u}/ui/jobs/{job}"), Some(&session)).text().unwrap();
    assert_eq!(page.matches(r#"<rect class="task s-succeeded""#).count(), 12, "{page}");
    let binned: usize =
        page.split(r#"data-count=""#).skip(1).map(|v| v[..v.find('"').unwrap()].parse::<usize>().unwrap()).sum();
    assert_eq!(binned, 12);

    // Every page answers for the session's project.
    s.ok(&["var", "set", "API_URL", "http://x"]);
    s.cli_stdin(&["secret", "set", "db", "-"], b"hidden-value");
    let invocation = s.get_json("/v1/invocations?limit=1")["invocations"][0]["id"].as_str().unwrap().to_string();
    for (path, needle) in [
        ("/ui/".to_string(), r#"id="count-functions">1<"#.to_string()),
        ("/ui/functions".into(), r#"data-function="t""#.into()),
        ("/ui/functions/t".into(), "Versions".into()),
        ("/ui/invocations?function=t&state=succeeded&since=1h".into(), invocation.clone()),
        (format!("/ui/invocations/{invocation}"), "Attempts".into()),
        ("/ui/jobs".into(), job.clone()),
        ("/ui/workers".into(), r#"data-state="alive""#.into()),
        ("/ui/events".into(), "stratus.job.succeeded".into()),
        ("/ui/triggers".into(), "No triggers".into()),
        ("/ui/schedules".into(), "No schedules".into()),
        ("/ui/settings".into(), r#"data-secret="db""#.into()),
        ("/ui/settings".into(), "http://x".into()),
    ] {
        let res = get(&format!("{u}{path}"), Some(&session));
        assert_eq!(res.status(), 200, "{path}");
        let body = res.text().unwrap();
        assert!(body.contains(&needle), "{path} lacks {needle}");
    }
    let settings = get(&format!("{u}/ui/settings"), Some(&session)).text().unwrap();
    assert!(!settings.contains("hidden-value"), "a secret's value is never on a page");
    let shown = get(&format!("{u}/ui/invocations/{invocation}"), Some(&session)).text().unwrap();
    assert!(shown.contains("<h2>Input</h2><pre>&quot;t-"), "the input's preview, escaped");
    let bad = get(&format!("{u}/ui/invocations?state=sleeping"), Some(&session));
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("sleeping"), "the error page names the problem");

    // The API takes the cookie on reads only: a page of another site cannot
    // make it change anything.
    assert_eq!(get(&format!("{u}/v1/jobs/{job}"), Some(&session)).status(), 200);
    let post = browser()
        .post(format!("{u}/v1/functions/t/invoke"))
        .header("cookie", format!("stratus_session={session}"))
        .body("echo:x")
        .send()
        .unwrap();
    assert_eq!(post.status(), 401);
    let foreign = post_form(
        &format!("{u}/ui/login"),
        &[("origin", "http://evil.example".into())],
        &[("token", s.token.as_str())],
    );
    assert_eq!(foreign.status(), 403, "a form on another site is refused");

    // A form without the session's CSRF token changes nothing.
    let running = s.ok(&["map", "t", "--inputs", inputs.to_str().unwrap(), "--detach"]).trim().to_string();
    let forged = post_form(
        &format!("{u}/ui/jobs/{running}/cancel"),
        &[("cookie", format!("stratus_session={session}"))],
        &[("csrf", "0000")],
    );
    assert_eq!(forged.status(), 403);
    assert_ne!(s.get_json(&format!("/v1/jobs/{running}?wait=60"))["state"], "cancelled");
}

#[test]
fn a_pasted_token_logs_in_with_its_role_and_its_revocation_ends_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let u = &s.url;
    let reader = s.ok(&["token", "create", "--role", "reader", "--name", "viewer"]).trim().to_string();
    let worker = s.ok(&["token", "create", "--role", "worker"]).trim().to_string();

    let refused = post_form(&format!("{u}/ui/login"), &[], &[("token", worker.as_str())]);
    assert_eq!(refused.status(), 401);
    assert!(refused.text().unwrap().contains("login-error"));
    let wrong = post_form(&format!("{u}/ui/login"), &[], &[("token", "stratus_guess")]);
    assert_eq!(wrong.status(), 401);

    let res =
        post_form(&format!("{u}/ui/login"), &[], &[("token", reader.as_str()), ("next", "https://evil.example/")]);
    assert_eq!(res.status(), 200);
    let session = session_cookie(&res);
    assert!(res.text().unwrap().contains("url=/ui/"), "only a dashboard page is a place to go next");
    let page = get(&format!("{u}/ui/"), Some(&session)).text().unwrap();
    assert!(page.contains("(reader)") && page.contains("viewer"), "the header names the token");
    let scripted = browser().get(format!("{u}/ui/")).bearer_auth(&reader).send().unwrap().text().unwrap();
    assert!(scripted.contains("viewer"), "a script may read pages with the token itself");
    let sessions = s.ok(&["token", "list", "--json"]);
    assert!(sessions.contains("ui-session-"), "a session is a token of its own, listed: {sessions}");

    // Logging out ends the session for good.
    let out = post_form(
        &format!("{u}/ui/logout"),
        &[("cookie", format!("stratus_session={session}"))],
        &[("csrf", csrf(&page).as_str())],
    );
    assert_eq!(out.status(), 303);
    assert_eq!(get(&format!("{u}/ui/"), Some(&session)).status(), 303);

    // Revoking the token that logged in ends its sessions.
    let res = post_form(&format!("{u}/ui/login"), &[], &[("token", reader.as_str())]);
    let session = session_cookie(&res);
    assert_eq!(get(&format!("{u}/ui/jobs"), Some(&session)).status(), 200);
    s.ok(&["token", "revoke", "viewer"]);
    let after = get(&format!("{u}/ui/jobs"), Some(&session));
    assert_eq!((after.status().as_u16(), location(&after)), (303, "/ui/login?next=/ui/jobs".to_string()));
    assert!(!s.ok(&["token", "list", "--json"]).contains("ui-session-"));

    // `stratus dashboard` refuses a place outside the dashboard.
    let bad = s.cli(&["dashboard", "--next", "https://evil.example"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid next"), "{}", stderr(&bad));
}
