//! `stratus up --state postgres://…`: the same functions, invocations and jobs
//! with the state in the real PostgreSQL (STRATUS_TEST_POSTGRES, default
//! postgres://postgres@127.0.0.1:5432/test), surviving a kill -9.

mod common;
use common::*;

#[test]
fn functions_invocations_and_jobs_on_postgres_survive_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = format!("e2e_{}", stratus_core::new_id().as_uuid().simple());
    let state = postgres_url(&schema);
    let data = tmp.path().join("data");
    let mut s = Server::start_in(data.clone(), &["--slots", "2", "--state", &state]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    assert_eq!(s.ok(&["invoke", "t", "echo:on postgres"]), "on postgres");
    let id = s.ok(&["invoke", "t", "echo:later", "--async"]).trim().to_string();
    assert_eq!(s.ok(&["wait", &id]), "later");
    let inputs = inputs_file(tmp.path(), 200);
    let job = s.ok(&["map", "t", "--inputs", inputs.to_str().unwrap(), "--detach"]).trim().to_string();
    s.ok(&["wait", &job]);
    assert_all_echoed(&s, &job, 200);

    s.kill9();
    let s = Server::start_in(data, &["--slots", "2", "--state", &state]);
    assert!(s.ok(&["fn", "list"]).contains('t'), "the function is still there");
    assert_eq!(s.ok(&["wait", &id]), "later", "the invocation's result is still there");
    assert_all_echoed(&s, &job, 200);
    assert_eq!(s.ok(&["invoke", "t", "echo:again"]), "again");
}
