//! Events and triggers through the real binary: published and built-in
//! events, filters and conditions, actions that run exactly once per
//! (event, trigger), also across a kill -9 of the server.

mod common;
use common::*;
use serde_json::Value;

/// The events of a type, oldest first.
fn events_of(s: &Server, ty: &str) -> Vec<Value> {
    let v = s.get_json(&format!("/v1/events?type={ty}&limit=1000"));
    v["events"].as_array().cloned().unwrap_or_default()
}

/// The invocations of a function (newest first).
fn invocations_of(s: &Server, function: &str) -> Vec<Value> {
    let out = s.ok(&["invocations", "--fn", function, "--limit", "1000", "--json"]);
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn deploy_echo(s: &Server, name: &str) {
    s.ok(&["fn", "deploy", name, "--wasm", guest_wasm().to_str().unwrap()]);
}

/// Publishes an event through the CLI; its stdout.
fn publish(s: &Server, ty: &str, id: &str, subject: &str) -> String {
    s.ok(&["event", "publish", "--type", ty, "--source", "/test", "--id", id, "--subject", subject, "--data", "{}"])
}

#[test]
fn a_published_event_fires_its_trigger_once_even_published_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    deploy_echo(&s, "echo");
    let created = s.ok(&["trigger", "create", "on-photo", "--on", "com.example.photo", "--invoke", "echo", "--json"]);
    let t: Value = serde_json::from_str(&created).unwrap();
    assert_eq!((t["name"].as_str(), t["enabled"].as_bool()), (Some("on-photo"), Some(true)), "{t}");

    assert_eq!(publish(&s, "com.example.photo", "p1", "a.png").trim(), "published");
    assert!(publish(&s, "com.example.photo", "p1", "a.png").contains("ignored"), "same source and id");
    publish(&s, "com.example.other", "o1", "a.png");
    s.eventually("the action runs", || invocations_of(&s, "echo").first().is_some_and(|i| i["state"] == "succeeded"));
    // The action's own end is an event, after which nothing more is due.
    s.eventually("its end is an event", || !events_of(&s, "stratus.invocation.succeeded").is_empty());
    let runs = invocations_of(&s, "echo");
    assert_eq!(runs.len(), 1, "one action per (event, trigger): {runs:?}");
    let id = runs[0]["id"].as_str().unwrap();
    let input: Value = serde_json::from_str(&s.ok(&["wait", id])).unwrap();
    assert_eq!((input["id"].as_str(), input["type"].as_str()), (Some("p1"), Some("com.example.photo")), "{input}");
    assert_eq!(input["subject"], "a.png");

    let shown: Value = serde_json::from_str(&s.ok(&["trigger", "show", "on-photo", "--json"])).unwrap();
    let firings = shown["firings"].as_array().unwrap();
    assert_eq!(firings.len(), 1, "{shown}");
    assert_eq!(firings[0]["invocation"], id);
    let ended = events_of(&s, "stratus.invocation.succeeded");
    assert_eq!(ended[0]["subject"], "echo");
    assert_eq!(ended[0]["depth"], 1, "an action's events carry its causation depth");

    // Disabled, it does not fire; deleted, it is gone.
    s.ok(&["trigger", "disable", "on-photo"]);
    publish(&s, "com.example.photo", "p2", "b.png");
    s.ok(&["trigger", "delete", "on-photo"]);
    assert!(s.ok(&["trigger", "list"]).trim().is_empty());
    let out = s.cli(&["trigger", "show", "on-photo", "--json"]);
    assert!(!out.status.success() && stderr(&out).contains("not_found"), "{}", stderr(&out));
    // The lines printed by `events` follow the stream in order.
    let lines = s.ok(&["events", "--json"]);
    let seqs: Vec<u64> =
        lines.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs.len() >= 5, "{seqs:?}");
    assert_eq!(invocations_of(&s, "echo").len(), 1, "the disabled trigger did not fire");
}

#[test]
fn a_trigger_loop_stops_at_depth_16_with_a_failed_event() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    deploy_echo(&s, "looper");
    s.ok(&["trigger", "create", "start", "--on", "com.example.go", "--invoke", "looper"]);
    s.ok(&[
        "trigger",
        "create",
        "again",
        "--on",
        "stratus.invocation.succeeded",
        "--subject-prefix",
        "looper",
        "--invoke",
        "looper",
    ]);
    publish(&s, "com.example.go", "g1", "x");
    s.eventually("the loop is cut", || !events_of(&s, "stratus.trigger.failed").is_empty());
    let failed = &events_of(&s, "stratus.trigger.failed")[0];
    assert_eq!(failed["data"]["trigger"], "again", "{failed}");
    assert!(failed["data"]["reason"].as_str().unwrap().contains("depth"), "{failed}");
    s.eventually("every run ends", || invocations_of(&s, "looper").iter().all(|i| i["state"] == "succeeded"));
    assert_eq!(invocations_of(&s, "looper").len(), 16, "one run per depth from 1 to 16");
}

#[test]
fn a_join_fires_once_after_the_third_distinct_event_and_groups_stay_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    s.ok(&[
        "trigger",
        "create",
        "batches",
        "--on",
        "com.example.part",
        "--condition",
        "join:3",
        "--group-by",
        "subject",
        "--emit",
        "com.example.batch",
    ]);
    for (id, subject) in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A")] {
        publish(&s, "com.example.part", id, subject);
    }
    s.eventually("batch A", || !events_of(&s, "com.example.batch").is_empty());
    for (id, subject) in [("b2", "B"), ("b3", "B")] {
        publish(&s, "com.example.part", id, subject);
    }
    s.eventually("batch B", || events_of(&s, "com.example.batch").len() == 2);
    let batches = events_of(&s, "com.example.batch");
    let ids = |b: &Value| -> Vec<String> {
        b["data"]["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(
        (batches[0]["subject"].as_str(), ids(&batches[0])),
        (Some("A"), vec!["a1".into(), "a2".into(), "a3".into()])
    );
    assert_eq!(
        (batches[1]["subject"].as_str(), ids(&batches[1])),
        (Some("B"), vec!["b1".into(), "b2".into(), "b3".into()])
    );
    // Counting starts again: two more of A do not fire.
    publish(&s, "com.example.part", "a4", "A");
    publish(&s, "com.example.part", "a5", "A");
    s.ok(&["trigger", "create", "probe", "--on", "com.example.probe", "--emit", "com.example.probed"]);
    publish(&s, "com.example.probe", "p", "-");
    s.eventually("the probe, after the parts", || !events_of(&s, "com.example.probed").is_empty());
    assert_eq!(events_of(&s, "com.example.batch").len(), 2);
    let shown: Value = serde_json::from_str(&s.ok(&["trigger", "show", "batches", "--json"])).unwrap();
    let contexts = shown["contexts"].as_array().unwrap();
    assert_eq!(contexts.len(), 1, "{shown}");
    assert_eq!(contexts[0]["group"], "A");
}

#[test]
fn a_trigger_on_a_job_s_end_runs_with_the_job_event() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    deploy_echo(&s, "echo");
    deploy_echo(&s, "after");
    s.ok(&[
        "trigger",
        "create",
        "then",
        "--on",
        "stratus.job.succeeded",
        "--subject-prefix",
        "echo",
        "--invoke",
        "after",
    ]);
    let inputs = inputs_file(tmp.path(), 5);
    let printed = s.ok(&["map", "echo", "--inputs", inputs.to_str().unwrap(), "--detach", "--json"]);
    let job: Value = serde_json::from_str(&printed).unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    s.eventually("the job's trigger runs", || {
        invocations_of(&s, "after").first().is_some_and(|i| i["state"] == "succeeded")
    });
    let run = &invocations_of(&s, "after")[0];
    let input: Value = serde_json::from_str(&s.ok(&["wait", run["id"].as_str().unwrap()])).unwrap();
    assert_eq!(input["type"], "stratus.job.succeeded");
    assert_eq!(input["id"], job_id.as_str());
    assert_eq!(input["data"]["succeeded"], 5, "{input}");
    assert!(events_of(&s, "stratus.invocation.succeeded").iter().all(|e| e["subject"] != "echo"), "tasks emit none");
}

#[test]
fn bad_triggers_and_events_are_refused_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let refused = |args: &[&str], says: &str| {
        let mut all = vec!["trigger", "create", "t", "--on", "x"];
        all.extend_from_slice(args);
        let out = s.cli(&all);
        assert!(!out.status.success(), "{all:?} was accepted");
        assert!(stderr(&out).contains(says), "{all:?}: {}", stderr(&out));
    };
    refused(&["--filter", "{}", "--emit", "y"], "filter");
    refused(&["--filter", r#"{"exact": {}}"#, "--emit", "y"], "empty filter");
    refused(&["--filter", r#"{"exact": {"colour": "red"}}"#, "--emit", "y"], "not an attribute");
    refused(&["--condition", "join:0", "--emit", "y"], "condition");
    refused(&["--condition", "threshold:3/soon", "--emit", "y"], "condition");
    refused(&["--invoke", "f", "--input", "object"], "object events");
    refused(&["--emit", "stratus.job.succeeded"], "stratus.");
    refused(&[], "one action");
    assert!(s.ok(&["trigger", "list"]).trim().is_empty(), "nothing stored");

    let post = |body: &str| s.http().post(format!("{}/v1/events", s.url)).body(body.to_string()).send().unwrap();
    for bad in [r#"{"source":"s"}"#, r#"{"type":"stratus.job.succeeded","source":"s"}"#, "[]", "nope"] {
        let res = post(bad);
        assert_eq!(res.status(), 400, "{bad}");
        let body: Value = res.json().unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let batch = post(r#"[{"type":"t","source":"s","id":"1"},{"type":"t"}]"#);
    assert_eq!(batch.status(), 400, "a batch with a bad event is refused whole");
    assert!(events_of(&s, "t").is_empty(), "nothing stored");
    let unknown = s
        .http()
        .post(format!("{}/v1/triggers", s.url))
        .body(r#"{"name":"t","on":"x","colour":1,"action":{"kind":"emit","type":"y"}}"#)
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 400);

    // Binary mode: attributes in headers, the body is the data.
    let res = s
        .http()
        .post(format!("{}/v1/events", s.url))
        .header("ce-type", "com.example.raw")
        .header("ce-source", "/cam")
        .header("ce-id", "r1")
        .header("content-type", "image/png")
        .body(vec![0u8, 1, 2])
        .send()
        .unwrap();
    assert_eq!(res.status(), 202);
    let raw = &events_of(&s, "com.example.raw")[0];
    assert_eq!((raw["datacontenttype"].as_str(), raw["data_base64"].as_str()), (Some("image/png"), Some("AAEC")));
}

/// The image pipeline's shape: uploads under `in/uploads/` run a function
/// on each object and store its output under `out/processed/`. The server
/// is killed with -9 while they run; after a restart every upload has its
/// output and exactly one invocation.
#[test]
fn object_uploads_are_each_processed_once_across_a_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(tmp.path(), &["--slots", "2"]);
    deploy_echo(&s, "filter");
    s.ok(&[
        "trigger",
        "create",
        "pipeline",
        "--on",
        "stratus.object.created",
        "--subject-prefix",
        "in/uploads/",
        "--invoke",
        "filter",
        "--input",
        "object",
        "--output",
        "out/processed/",
    ]);
    const N: usize = 20;
    for i in 0..N {
        // The guest sleeps 200 ms on this input, then prints "slept".
        let f = tmp.path().join(format!("img{i}"));
        std::fs::write(&f, "sleep:200").unwrap();
        s.ok(&["object", "put", &format!("in/uploads/img{i}.ppm"), f.to_str().unwrap()]);
    }
    std::fs::write(tmp.path().join("other"), "x").unwrap();
    s.ok(&["object", "put", "in/elsewhere/x", tmp.path().join("other").to_str().unwrap()]);
    let outputs = |s: &Server| -> usize {
        let out = s.cli(&["object", "ls", "out/processed/", "--json"]);
        if !out.status.success() {
            return 0;
        }
        stdout(&out).lines().count()
    };
    s.eventually("some are processed", || outputs(&s) >= 2);
    s.kill9();
    let s = Server::start_in(s.data_dir.clone(), &["--slots", "2"]);
    s.eventually("every upload is processed", || outputs(&s) == N);
    for i in 0..N {
        assert_eq!(s.ok(&["object", "get", &format!("out/processed/uploads/img{i}.ppm")]), "slept");
    }
    let runs = invocations_of(&s, "filter");
    assert_eq!(runs.len(), N, "exactly one invocation per upload event");
    let created = events_of(&s, "stratus.object.created");
    let uploads = created.iter().filter(|e| e["subject"].as_str().unwrap().starts_with("in/uploads/")).count();
    assert_eq!(uploads, N);
    let shown: Value = serde_json::from_str(&s.ok(&["trigger", "show", "pipeline", "--json"])).unwrap();
    assert_eq!(shown["firings"].as_array().unwrap().len(), N.min(20));
}

/// The example's own filter (examples/image-pipeline): each upload comes
/// out inverted under the output prefix; a bad image fails its invocation.
#[test]
fn the_image_pipeline_example_inverts_each_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    s.ok(&["fn", "deploy", "invert", "--wasm", image_filter_wasm().to_str().unwrap()]);
    s.ok(&[
        "trigger",
        "create",
        "pipeline",
        "--on",
        "stratus.object.created",
        "--subject-prefix",
        "photos/uploads/",
        "--invoke",
        "invert",
        "--input",
        "object",
        "--output",
        "photos/processed/",
    ]);
    let header = b"P5\n# grey\n4 2\n255\n";
    let pixels: Vec<u8> = vec![0, 10, 200, 255, 1, 2, 3, 4];
    let mut img = header.to_vec();
    img.extend_from_slice(&pixels);
    for i in 0..3 {
        let f = tmp.path().join(format!("img{i}.pgm"));
        std::fs::write(&f, &img).unwrap();
        s.ok(&["object", "put", &format!("photos/uploads/img{i}.pgm"), f.to_str().unwrap()]);
    }
    std::fs::write(tmp.path().join("bad"), "not an image").unwrap();
    s.ok(&["object", "put", "photos/uploads/bad.pgm", tmp.path().join("bad").to_str().unwrap()]);
    s.eventually("every run ends", || {
        let runs = invocations_of(&s, "invert");
        runs.len() == 4 && runs.iter().all(|i| i["state"] != "queued" && i["state"] != "running")
    });
    for i in 0..3 {
        let out = tmp.path().join(format!("out{i}.pgm"));
        s.ok(&["object", "get", &format!("photos/processed/uploads/img{i}.pgm"), out.to_str().unwrap()]);
        let got = std::fs::read(out).unwrap();
        assert_eq!(&got[..header.len()], header);
        assert_eq!(&got[header.len()..], pixels.iter().map(|p| 255 - p).collect::<Vec<u8>>());
    }
    let failed = events_of(&s, "stratus.invocation.failed");
    assert_eq!(failed.len(), 1, "the bad image's run failed: {failed:?}");
    assert!(s.cli(&["object", "get", "photos/processed/uploads/bad.pgm"]).status.code() != Some(0));
}

/// Events published to the broker (the deployment's ingest topic) are
/// stored once and fire once: the same message delivered again, as the
/// broker does when a server dies before its ack, changes nothing.
#[test]
fn events_from_the_broker_are_stored_once_and_fire_once() {
    let q = TestQueue::new("ingest");
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2", "--broker", &amqp(), "--broker-queue", &q.0]);
    deploy_echo(&s, "echo");
    s.ok(&["trigger", "create", "from-rabbit", "--on", "com.example.rmq", "--invoke", "echo"]);
    let topic = format!("ingest.{}", q.0);
    let one = br#"{"specversion":"1.0","type":"com.example.rmq","source":"/rabbit","id":"m1","data":{"n":1}}"#;
    stratus_broker::testing::publish_event_blocking(&amqp(), &topic, one);
    stratus_broker::testing::publish_event_blocking(&amqp(), &topic, one);
    let batch = br#"[{"type":"com.example.rmq","source":"/rabbit","id":"m2"},{"type":"com.example.rmq","source":"/rabbit","id":"m1"}]"#;
    stratus_broker::testing::publish_event_blocking(&amqp(), &topic, batch);
    stratus_broker::testing::publish_event_blocking(&amqp(), &topic, b"not an event");
    let other = br#"{"type":"com.example.rmq","source":"/rabbit","id":"m3","stratusproject":"nowhere-else"}"#;
    stratus_broker::testing::publish_event_blocking(&amqp(), &topic, other);
    s.eventually("both actions end", || {
        let runs = invocations_of(&s, "echo");
        runs.len() == 2 && runs.iter().all(|i| i["state"] == "succeeded")
    });
    let stored = events_of(&s, "com.example.rmq");
    let ids: Vec<&str> = stored.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m1", "m2"], "each event once, in the default project only");
    // A marker published after everything else: once it is stored, every
    // earlier message was handled, and no third action came.
    let marker = br#"{"type":"com.example.marker","source":"/rabbit","id":"end"}"#;
    stratus_broker::testing::publish_event_blocking(&amqp(), &topic, marker);
    s.eventually("the marker", || !events_of(&s, "com.example.marker").is_empty());
    assert_eq!(invocations_of(&s, "echo").len(), 2);
}

#[test]
fn a_map_action_runs_a_job_over_an_array_in_the_event() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    deploy_echo(&s, "echo");
    s.ok(&["trigger", "create", "fan-out", "--on", "com.example.batch", "--map", "echo", "--items", "data.items"]);
    let data = r#"{"items": ["echo:a", "echo:b", "echo:c"]}"#;
    s.ok(&["event", "publish", "--type", "com.example.batch", "--source", "/t", "--id", "b1", "--data", data]);
    s.ok(&[
        "event",
        "publish",
        "--type",
        "com.example.batch",
        "--source",
        "/t",
        "--id",
        "b2",
        "--data",
        r#"{"items": 3}"#,
    ]);
    s.eventually("the job ends", || !events_of(&s, "stratus.job.succeeded").is_empty());
    let ended = &events_of(&s, "stratus.job.succeeded")[0];
    assert_eq!((ended["data"]["total"].as_u64(), ended["subject"].as_str()), (Some(3), Some("echo")));
    let job = ended["id"].as_str().unwrap();
    // Each task's input is its element's JSON text, as with `map --inputs`.
    let results = s.ok(&["job", "results", job]);
    assert_eq!(results.lines().collect::<Vec<_>>(), [r#""echo:a""#, r#""echo:b""#, r#""echo:c""#]);
    s.eventually("the bad event's dead letter", || !events_of(&s, "stratus.trigger.failed").is_empty());
    let failed = &events_of(&s, "stratus.trigger.failed")[0];
    assert!(failed["data"]["reason"].as_str().unwrap().contains("not a JSON array"), "{failed}");
    assert_eq!(events_of(&s, "stratus.job.succeeded").len(), 1, "one job, for the good event");
    // The project's quota holds for a trigger's job too.
    s.ok(&["project", "set", "default", "--max-tasks-per-job", "2"]);
    s.ok(&["event", "publish", "--type", "com.example.batch", "--source", "/t", "--id", "b3", "--data", data]);
    s.eventually("the quota's dead letter", || events_of(&s, "stratus.trigger.failed").len() == 2);
    let over = &events_of(&s, "stratus.trigger.failed")[1];
    assert!(over["data"]["reason"].as_str().unwrap().contains("max_tasks_per_job"), "{over}");
}

#[test]
fn events_follow_prints_each_event_as_it_is_stored() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    publish(&s, "com.example.before", "b", "x");
    let mut follow = std::process::Command::new(BIN)
        .args(["events", "--follow", "--json", "--type", "com.example.live"])
        .env("STRATUS_URL", &s.url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    for id in ["l1", "l2"] {
        publish(&s, "com.example.live", id, "x");
        let line = lines.next().unwrap().unwrap();
        let e: Value = serde_json::from_str(&line).unwrap();
        assert_eq!((e["id"].as_str(), e["type"].as_str()), (Some(id), Some("com.example.live")), "{line}");
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
}
