//! The suite every object store engine passes: local files, and S3 against
//! a real S3 server (`s3s-fs`, started per test; see `stratus_blob::testing`).

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::sync::Arc;
use stratus_blob::testing::S3Server;
use stratus_blob::{Error, Key, ObjectStore, open};

/// An opened store and whatever must live as long as it.
struct Fixture {
    store: Arc<dyn ObjectStore>,
    _guard: Box<dyn std::any::Any>,
}

fn local() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&format!("file://{}", dir.path().display())).unwrap();
    Fixture { store, _guard: Box::new(dir) }
}

fn s3() -> Fixture {
    let server = S3Server::start(&["stratus"]);
    let store = open(&server.url("stratus")).unwrap();
    Fixture { store, _guard: Box::new(server) }
}

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

async fn collect(s: stratus_blob::ByteStream) -> Vec<u8> {
    let parts: Vec<Bytes> = s.try_collect().await.unwrap();
    parts.concat()
}

async fn round_trip(f: Fixture) {
    let s = f.store;
    let k = key("b/x/one");
    s.put(&k, Bytes::from_static(b"hello world")).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Bytes::from_static(b"hello world"));
    let m = s.head(&k).await.unwrap().expect("head");
    assert_eq!((m.key.as_str(), m.size), ("b/x/one", 11));
    assert!(m.last_modified > 1_600_000_000_000, "last_modified in ms: {}", m.last_modified);
    s.put(&k, Bytes::from_static(b"replaced")).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Bytes::from_static(b"replaced"));
    s.put(&key("b/empty"), Bytes::new()).await.unwrap();
    assert_eq!(s.get(&key("b/empty")).await.unwrap().len(), 0);
}

async fn ranges(f: Fixture) {
    let s = f.store;
    let k = key("b/digits");
    let data: Vec<u8> = (0..100_000u32).map(|i| b'0' + (i % 10) as u8).collect();
    s.put(&k, Bytes::from(data.clone())).await.unwrap();
    for r in [0..1, 6..11, 99_990..100_000, 0..100_000, 4_096..65_537] {
        let (m, st) = s.get_stream(&k, Some(r.clone())).await.unwrap();
        assert_eq!(m.size, 100_000, "meta is the whole object's");
        assert_eq!(collect(st).await, &data[r.start as usize..r.end as usize], "range {r:?}");
    }
    let (_, st) = s.get_stream(&k, None).await.unwrap();
    assert_eq!(collect(st).await, data);
}

async fn streams_in_parts(f: Fixture) {
    let s = f.store;
    // 20 MiB in 1 MiB chunks: several 8 MiB parts.
    let big = stream::iter((0..20u8).map(|i| Ok(Bytes::from(vec![i; 1 << 20])))).boxed();
    let k = key("b/big");
    assert_eq!(s.put_stream(&k, big).await.unwrap(), 20 << 20);
    assert_eq!(s.head(&k).await.unwrap().unwrap().size, 20 << 20);
    let (_, st) = s.get_stream(&k, Some((9 << 20) - 2..(9 << 20) + 2)).await.unwrap();
    assert_eq!(collect(st).await, [8, 8, 9, 9]);
    let small = stream::iter([Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))]).boxed();
    assert_eq!(s.put_stream(&key("b/small"), small).await.unwrap(), 4);
    assert_eq!(s.get(&key("b/small")).await.unwrap(), Bytes::from_static(b"abcd"));
}

async fn broken_stream_stores_nothing(f: Fixture) {
    let s = f.store;
    let k = key("b/broken");
    let chunks: Vec<std::io::Result<Bytes>> = vec![
        Ok(Bytes::from(vec![1u8; 6 << 20])),
        Ok(Bytes::from(vec![2u8; 6 << 20])),
        Err(std::io::Error::other("client went away")),
    ];
    let err = s.put_stream(&k, stream::iter(chunks).boxed()).await.unwrap_err();
    assert!(matches!(err, Error::Source(_)), "{err}");
    assert!(s.head(&k).await.unwrap().is_none(), "a broken upload leaves no object");
    assert!(s.list(Some(&key("b"))).await.unwrap().is_empty());
}

async fn lists_by_whole_segment_prefix(f: Fixture) {
    let s = f.store;
    for k in ["b/x/one", "b/x/two", "b/y", "bb/z", "c/w"] {
        s.put(&key(k), Bytes::from(k.to_string())).await.unwrap();
    }
    let names = |v: Vec<stratus_blob::ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
    assert_eq!(names(s.list(Some(&key("b"))).await.unwrap()), ["b/x/one", "b/x/two", "b/y"]);
    assert_eq!(names(s.list(Some(&key("b/x"))).await.unwrap()), ["b/x/one", "b/x/two"]);
    assert!(s.list(Some(&key("nothing"))).await.unwrap().is_empty());
    assert_eq!(s.list(None).await.unwrap().len(), 5);
    let sizes: Vec<u64> = s.list(Some(&key("b/x"))).await.unwrap().iter().map(|m| m.size).collect();
    assert_eq!(sizes, [7, 7]);
}

async fn missing_and_delete(f: Fixture) {
    let s = f.store;
    let k = key("b/gone");
    assert!(matches!(s.get(&k).await, Err(Error::NotFound(_))));
    assert!(matches!(s.get_stream(&k, Some(0..1)).await, Err(Error::NotFound(_))));
    assert!(s.head(&k).await.unwrap().is_none());
    assert!(!s.delete(&k).await.unwrap());
    s.put(&k, Bytes::from_static(b"x")).await.unwrap();
    assert!(s.delete(&k).await.unwrap());
    assert!(!s.delete(&k).await.unwrap());
    assert!(s.head(&k).await.unwrap().is_none());
}

async fn concurrent_writers(f: Fixture) {
    let s = f.store;
    let writes = (0..64).map(|i| {
        let s = s.clone();
        async move { s.put(&key(&format!("b/c/{i:03}")), Bytes::from(vec![i as u8; 1000 + i])).await }
    });
    futures::future::try_join_all(writes).await.unwrap();
    let listed = s.list(Some(&key("b/c"))).await.unwrap();
    assert_eq!(listed.len(), 64);
    for (i, m) in listed.iter().enumerate() {
        assert_eq!((m.key.clone(), m.size), (format!("b/c/{i:03}"), 1000 + i as u64));
    }
}

/// Keys come back from a listing as they were stored (non-ASCII, `#`,
/// `%`, spaces), so a listed key can be read back.
async fn listed_keys_are_the_stored_keys(f: Fixture) {
    let s = f.store;
    let stored = ["b/caf\u{e9} #1.txt", "b/100%/x", "b/\u{65e5}\u{672c}"];
    for k in stored {
        s.put(&key(k), Bytes::from(k.to_string())).await.unwrap();
    }
    let listed: Vec<String> = s.list(Some(&key("b"))).await.unwrap().into_iter().map(|m| m.key).collect();
    let mut want: Vec<String> = stored.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    for k in &listed {
        assert_eq!(s.get(&key(k)).await.unwrap(), Bytes::from(k.clone()), "{k}");
    }
}

macro_rules! conformance {
    ($engine:ident) => {
        mod $engine {
            #[tokio::test]
            async fn round_trip() {
                super::round_trip(super::$engine()).await
            }
            #[tokio::test]
            async fn ranges() {
                super::ranges(super::$engine()).await
            }
            #[tokio::test]
            async fn streams_in_parts() {
                super::streams_in_parts(super::$engine()).await
            }
            #[tokio::test]
            async fn broken_stream_stores_nothing() {
                super::broken_stream_stores_nothing(super::$engine()).await
            }
            #[tokio::test]
            async fn lists_by_whole_segment_prefix() {
                super::lists_by_whole_segment_prefix(super::$engine()).await
            }
            #[tokio::test]
            async fn missing_and_delete() {
                super::missing_and_delete(super::$engine()).await
            }
            #[tokio::test]
            async fn listed_keys_are_the_stored_keys() {
                super::listed_keys_are_the_stored_keys(super::$engine()).await
            }
            #[tokio::test]
            async fn concurrent_writers() {
                super::concurrent_writers(super::$engine()).await
            }
        }
    };
}

conformance!(local);
conformance!(s3);

#[tokio::test]
async fn s3_prefixes_isolate_stores_in_one_bucket() {
    let server = S3Server::start(&["shared"]);
    let a = open(&server.url("shared/team-a")).unwrap();
    let b = open(&server.url("shared/team-b/deeper")).unwrap();
    a.put(&key("k/1"), Bytes::from_static(b"a")).await.unwrap();
    b.put(&key("k/1"), Bytes::from_static(b"b")).await.unwrap();
    assert_eq!(a.get(&key("k/1")).await.unwrap(), Bytes::from_static(b"a"));
    assert_eq!(b.get(&key("k/1")).await.unwrap(), Bytes::from_static(b"b"));
    assert_eq!(a.list(None).await.unwrap().len(), 1);
    // The server really holds them under the prefixes.
    assert!(server.root().join("shared/team-a/k/1").is_file());
    assert!(server.root().join("shared/team-b/deeper/k/1").is_file());
}

#[tokio::test]
async fn s3_errors_are_reported_not_hidden() {
    let gone = S3Server::start(&["exists"]);
    let gone_url = gone.url("exists");
    drop(gone);
    let err = open(&gone_url).unwrap().get(&key("k")).await.unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "a server that went away: {err}");
    let server = S3Server::start(&["exists"]);
    let wrong_secret = server.url("exists").replace("stratus-test-secret", "wrong");
    let err = open(&wrong_secret).unwrap().put(&key("k"), Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert!(!err.to_string().contains("wrong"), "no secret in: {err}");
    assert!(std::fs::read_dir(server.root().join("exists")).unwrap().next().is_none(), "nothing stored");
}

#[test]
fn bad_urls_are_refused_without_showing_secrets() {
    for (url, says) in [
        ("s3://", "no bucket"),
        ("s3://b?endpoint=http://h:1&colour=blue&secret_access_key=hunter2", "unknown parameter 'colour'"),
        ("s3://b/a//c?secret_access_key=hunter2", "empty path segment"),
        ("gs://b", "unsupported"),
    ] {
        let err = open(url).err().unwrap_or_else(|| panic!("{url} accepted")).to_string();
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

/// A local store leaves no file behind for an upload that broke, that was
/// dropped half-way (a client gone), or that a crash cut short.
#[tokio::test]
async fn local_uploads_that_do_not_finish_leave_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&format!("file://{}", dir.path().display())).unwrap();
    let chunks: Vec<std::io::Result<Bytes>> =
        vec![Ok(Bytes::from(vec![1u8; 9 << 20])), Err(std::io::Error::other("client went away"))];
    s.put_stream(&key("b/broken"), stream::iter(chunks).boxed()).await.unwrap_err();
    assert_eq!(files_under(dir.path()), Vec::<String>::new(), "a broken upload");

    // A body that never ends, dropped once its first part is written.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    tx.send(Ok(Bytes::from(vec![2u8; 9 << 20]))).await.unwrap();
    let body = tokio_stream_from(rx);
    let dropped = key("b/dropped");
    let upload = s.put_stream(&dropped, body);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(300), upload).await;
    drop(tx);
    // The abort runs on a task of its own: wait for it to be done.
    while !files_under(dir.path()).is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // What a crash left: a staging file beside an object.
    s.put(&key("b/kept"), Bytes::from_static(b"k")).await.unwrap();
    std::fs::write(dir.path().join("b/kept#7"), b"partial").unwrap();
    let s = open(&format!("file://{}", dir.path().display())).unwrap();
    assert_eq!(files_under(dir.path()), ["b/kept"]);
    assert_eq!(s.get(&key("b/kept")).await.unwrap(), Bytes::from_static(b"k"));
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> stratus_blob::ByteStream {
    stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// A key a file system cannot hold beside another (an object where a folder
/// of another must go) is a conflict, not a failure of the store.
#[tokio::test]
async fn local_keys_that_clash_with_others_are_conflicts() {
    let f = local();
    let s = f.store;
    s.put(&key("b/file"), Bytes::from_static(b"x")).await.unwrap();
    let err = s.put(&key("b/file/under"), Bytes::from_static(b"y")).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(..)), "{err}");
    let body = stream::iter([Ok(Bytes::from_static(b"z"))]).boxed();
    let err = s.put_stream(&key("b/file/under"), body).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(..)), "{err}");
    let long = format!("b/{}", "x".repeat(300));
    let err = s.put(&key(&long), Bytes::from_static(b"y")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
}
