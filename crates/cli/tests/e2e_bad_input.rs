//! Bad input gets a clear error naming the problem, and changes no state.

mod common;
use common::*;
use serde_json::Value;

fn error_of(res: reqwest::blocking::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().expect("error bodies are JSON");
    (
        status,
        body["error"]["code"].as_str().unwrap().to_string(),
        body["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn bad_input_is_refused_with_a_named_error_and_no_state_change() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1", "--max-body", "1M"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "good", "--wasm", guest.to_str().unwrap()]);
    s.ok(&["invoke", "good", "x"]);
    let before_fns = s.get_json("/v1/functions");
    let before_invs = s.get_json("/v1/invocations?limit=1000");

    // CLI: invalid wasm, missing --cmd, bad name, both kinds at once.
    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let out = s.cli(&["fn", "deploy", "junk", "--wasm", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid wasm module"), "{}", stderr(&out));
    let no_start = tmp.path().join("lib.wasm");
    std::fs::write(&no_start, b"\0asm\x01\0\0\0").unwrap();
    assert!(
        stderr(&s.cli(&["fn", "deploy", "lib", "--wasm", no_start.to_str().unwrap()])).contains("exports no _start")
    );
    let out = s.cli(&["fn", "deploy", "p", "--dir", tmp.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--cmd"), "{}", stderr(&out));
    let out = s.cli(&["fn", "deploy", "Bad_Name", "--wasm", guest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid function name"), "{}", stderr(&out));
    let out = s.cli(&["fn", "deploy", "x", "--wasm", guest.to_str().unwrap(), "--timeout", "soon"]);
    assert!(!out.status.success() && stderr(&out).contains("not a duration"));
    let out = s.cli(&["fn", "deploy", "x", "--wasm", guest.to_str().unwrap(), "--env", "NOEQUALS"]);
    assert!(!out.status.success() && stderr(&out).contains("KEY=VALUE"));
    let out = s.cli(&["invoke", "nope", "x"]);
    assert!(!out.status.success() && stderr(&out).contains("function 'nope' not found"));

    // HTTP.
    let http = s.http();
    let u = &s.url;
    let (st, code, msg) = error_of(http.post(format!("{u}/v1/functions/nope/invoke")).body("x").send().unwrap());
    assert_eq!((st, code.as_str()), (404, "not_found"), "{msg}");
    let (st, _, msg) = error_of(http.post(format!("{u}/v1/functions/No_Such/invoke")).send().unwrap());
    assert_eq!(st, 400);
    assert!(msg.contains("invalid function name"), "{msg}");
    let (st, code, _) =
        error_of(http.post(format!("{u}/v1/functions/good/invoke")).body(vec![b'a'; 2 << 20]).send().unwrap());
    assert_eq!((st, code.as_str()), (413, "payload_too_large"));
    // The server answers 413 before reading the body and closes that
    // connection; a new client does not reuse it.
    let http = s.http();
    let (st, _, msg) = error_of(http.put(format!("{u}/v1/functions/good")).body("{not json").send().unwrap());
    assert_eq!(st, 400);
    assert!(msg.starts_with("invalid JSON body"), "{msg}");
    let (st, _, msg) = error_of(
        http.put(format!("{u}/v1/functions/good"))
            .body(r#"{"runtime":{"kind":"wasm"},"artifact":"00","bogus":1}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 400);
    assert!(msg.contains("unknown field `bogus`"), "{msg}");
    let (st, _, msg) = error_of(
        http.put(format!("{u}/v1/functions/good"))
            .body(format!(r#"{{"runtime":{{"kind":"wasm"}},"artifact":"{}"}}"#, "a".repeat(64)))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 400);
    assert!(msg.contains("has not been uploaded"), "{msg}");
    let (st, _, msg) = error_of(
        http.put(format!("{u}/v1/functions/p"))
            .body(format!(r#"{{"runtime":{{"kind":"process","cmd":" "}},"artifact":"{}"}}"#, "a".repeat(64)))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 400);
    assert!(msg.contains("invalid cmd"), "{msg}");
    let (st, _, msg) = error_of(
        http.put(format!("{u}/v1/functions/good"))
            .body(format!(r#"{{"runtime":{{"kind":"wasm"}},"artifact":"{}","timeout_ms":0}}"#, "a".repeat(64)))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 400);
    assert!(msg.contains("invalid timeout"), "{msg}");
    let (st, _, msg) = error_of(http.put(format!("{u}/v1/artifacts/{}", "b".repeat(64))).body("abc").send().unwrap());
    assert_eq!(st, 400);
    assert!(msg.contains("digest mismatch"), "{msg}");
    let (st, _, _) = error_of(http.get(format!("{u}/v1/invocations/not-an-id")).send().unwrap());
    assert_eq!(st, 400);
    let (st, _, _) =
        error_of(http.get(format!("{u}/v1/invocations/01a20618-8eb3-776c-bf58-040c1abfd343")).send().unwrap());
    assert_eq!(st, 404);
    let (st, _, msg) = error_of(http.post(format!("{u}/v1/functions/good/invoke?async=maybe")).send().unwrap());
    assert_eq!(st, 400);
    assert!(msg.contains("invalid async"), "{msg}");
    let (st, _, _) = error_of(http.get(format!("{u}/v1/nothing-here")).send().unwrap());
    assert_eq!(st, 404);

    // Nothing changed.
    assert_eq!(s.get_json("/v1/functions"), before_fns);
    assert_eq!(s.get_json("/v1/invocations?limit=1000"), before_invs);
}
