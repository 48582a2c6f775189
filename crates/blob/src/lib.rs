//! Object storage: bundles, wasm modules, user data, large outputs.
//!
//! [`ObjectStore`] is the trait the rest of Stratus uses; [`open`] picks the
//! implementation from a URL: `file://DIR` (the embedded default) or
//! `s3://BUCKET[/PREFIX]?endpoint=…` (any S3 store: AWS, MinIO, Garage, …).
//! Objects are addressed by a validated [`Key`]; reads and writes stream, so
//! an object never has to sit whole in memory.

pub mod testing;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path as OsPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload, WriteMultipart};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object '{0}' not found")]
    NotFound(String),
    #[error("invalid key '{key}': {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("unsupported object store URL '{0}': use file://DIR or s3://BUCKET[/PREFIX]?endpoint=URL")]
    UnsupportedUrl(String),
    #[error("invalid object store URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The key cannot be stored where another key is (on a file system, an
    /// object named like a folder of another, or the other way round).
    #[error("object '{0}' conflicts with an existing object: {1}")]
    Conflict(String, String),
    #[error("object store error: {0}")]
    Backend(String),
    #[error("read error while storing an object: {0}")]
    Source(#[from] std::io::Error),
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => Error::NotFound(decode(&path)),
            other => Error::Backend(other.to_string()),
        }
    }
}

impl Error {
    /// An error of the store about `key`, told apart by its cause: a key
    /// the file system cannot hold is the caller's mistake, not ours.
    fn about(key: &Key, e: object_store::Error) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                match io.raw_os_error() {
                    Some(libc_errno::ENOTDIR | libc_errno::EISDIR | libc_errno::ENOTEMPTY | libc_errno::EEXIST) => {
                        return Error::Conflict(key.0.clone(), io.to_string());
                    }
                    Some(libc_errno::ENAMETOOLONG) => {
                        return Error::InvalidKey {
                            key: key.0.chars().take(200).collect(),
                            reason: "a segment is too long for the store (at most 255 bytes)",
                        };
                    }
                    _ => {}
                }
            }
            cause = c.source();
        }
        e.into()
    }
}

/// The errno values [`Error::about`] looks for (Linux).
mod libc_errno {
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
}

/// A stored location back as the key it was stored under: `object_store`
/// percent-encodes some characters (non-ASCII, `#`, `%`, ...) of every
/// segment, and lists the encoded form.
fn decode(location: &str) -> String {
    percent_encoding::percent_decode_str(location).decode_utf8_lossy().into_owned()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An object key: `/`-separated segments, none empty, `.` or `..`, no
/// leading `/`, no control characters or backslashes, at most 1024 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

/// Where artifacts are kept, beside the projects' objects (`p/…`).
const ARTIFACTS: &str = "_stratus/artifacts";

impl Key {
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let bad = |reason| Err(Error::InvalidKey { key: key.chars().take(200).collect(), reason });
        if key.is_empty() {
            return bad("empty");
        }
        if key.len() > 1024 {
            return bad("longer than 1024 bytes");
        }
        if key.starts_with('/') {
            return bad("absolute paths are not allowed");
        }
        if key.chars().any(|c| c.is_control() || c == '\\') {
            return bad("control characters and backslashes are not allowed");
        }
        for seg in key.split('/') {
            match seg {
                "" => return bad("empty path segment"),
                "." | ".." => return bad("'.' and '..' segments are not allowed"),
                _ => {}
            }
        }
        Ok(Key(key))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Where a project's user object `bucket/key` is stored. `object` must
    /// already be a valid key.
    pub fn user(project: &str, object: &Key) -> Self {
        Key(format!("p/{project}/{}", object.0))
    }
    /// The prefix of every user object of a project.
    pub fn project(project: &str) -> Self {
        Key(format!("p/{project}"))
    }
    /// The key of a content-addressed artifact (wasm module or bundle).
    pub fn artifact(sha256_hex: &str) -> Self {
        Key(format!("{ARTIFACTS}/{sha256_hex}"))
    }
    /// The prefix of every artifact.
    pub fn artifacts() -> Self {
        Key(ARTIFACTS.to_string())
    }
    /// The digest of an artifact's key, or none for another key.
    pub fn artifact_digest(key: &str) -> Option<&str> {
        key.strip_prefix(ARTIFACTS)?.strip_prefix('/')
    }
    fn path(&self) -> OsPath {
        OsPath::from(self.0.as_str())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Milliseconds since the epoch.
    pub last_modified: i64,
}

pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    async fn put(&self, key: &Key, data: Bytes) -> Result<()>;
    /// Stores a stream in parts; returns the size stored. The object appears
    /// whole or not at all.
    async fn put_stream(&self, key: &Key, data: ByteStream) -> Result<u64>;
    async fn get(&self, key: &Key) -> Result<Bytes>;
    /// A byte range (or all) of an object, as a stream.
    async fn get_stream(&self, key: &Key, range: Option<Range<u64>>) -> Result<(ObjectMeta, ByteStream)>;
    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>>;
    /// Every object whose key starts with `prefix` (a whole-segment prefix).
    async fn list(&self, prefix: Option<&Key>) -> Result<Vec<ObjectMeta>>;
    /// False if there was no such object.
    async fn delete(&self, key: &Key) -> Result<bool>;
}

/// Opens the object store named by `url`: `file://DIR`, or
/// `s3://BUCKET[/PREFIX]` with these optional query parameters —
/// `endpoint` (an S3-compatible server; path-style requests, plain `http://`
/// allowed), `region` (default `us-east-1`), `access_key_id`,
/// `secret_access_key`, `session_token`. Parameters not given come from the
/// usual `AWS_*` environment variables. The bucket must exist.
pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>> {
    if let Some(dir) = url.strip_prefix("file://") {
        std::fs::create_dir_all(dir)?;
        remove_staging_files(std::path::Path::new(dir));
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Ok(Arc::new(Adapter(Arc::new(fs))))
    } else if url.starts_with("s3://") {
        open_s3(url)
    } else {
        Err(Error::UnsupportedUrl(stratus_core::url::redact(url)))
    }
}

/// Removes what uploads cut short by a crash left in a local store: their
/// staging files, `NAME#N` beside where the object would go (a `#` in a
/// stored name is always encoded, so only staging files have a plain one).
fn remove_staging_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => remove_staging_files(&path),
            Ok(t) if t.is_file() && entry.file_name().to_string_lossy().contains('#') => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

fn open_s3(url: &str) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::AmazonS3Builder;
    let shown = stratus_core::url::redact(url);
    let invalid = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
    let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| invalid("no bucket name".into()))?;
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_region("us-east-1");
    for (k, v) in parsed.query_pairs() {
        b = match k.as_ref() {
            "endpoint" => {
                let allow_http = v.starts_with("http://");
                b.with_endpoint(v.as_ref()).with_allow_http(allow_http).with_virtual_hosted_style_request(false)
            }
            "region" => b.with_region(v.as_ref()),
            "access_key_id" => b.with_access_key_id(v.as_ref()),
            "secret_access_key" => b.with_secret_access_key(v.as_ref()),
            "session_token" => b.with_token(v.as_ref()),
            other => return Err(invalid(format!("unknown parameter '{other}'"))),
        };
    }
    let prefix = parsed.path().trim_matches('/');
    if !prefix.is_empty() {
        Key::new(prefix).map_err(|e| invalid(e.to_string()))?;
    }
    let s3: Arc<dyn object_store::ObjectStore> = Arc::new(b.build().map_err(|e| invalid(e.to_string()))?);
    if prefix.is_empty() {
        return Ok(Arc::new(Adapter(s3)));
    }
    Ok(Arc::new(Adapter(Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)))))
}

/// An upload that is aborted (its parts and staging files removed) unless
/// it was taken out and finished.
struct AbortOnDrop(Option<WriteMultipart>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(w) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = w.abort().await;
            });
        }
    }
}

/// Implements [`ObjectStore`] over any `object_store` backend.
struct Adapter(Arc<dyn object_store::ObjectStore>);

fn meta(m: object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta { key: decode(m.location.as_ref()), size: m.size, last_modified: m.last_modified.timestamp_millis() }
}

#[async_trait]
impl ObjectStore for Adapter {
    async fn put(&self, key: &Key, data: Bytes) -> Result<()> {
        self.0.put(&key.path(), PutPayload::from_bytes(data)).await.map_err(|e| Error::about(key, e))?;
        Ok(())
    }

    async fn put_stream(&self, key: &Key, mut data: ByteStream) -> Result<u64> {
        let upload = self.0.put_multipart(&key.path()).await.map_err(|e| Error::about(key, e))?;
        // Aborted on every path that does not finish it: an error, or the
        // caller dropping this future (a client gone mid-upload).
        let mut w = AbortOnDrop(Some(WriteMultipart::new_with_chunk_size(upload, 8 << 20)));
        let mut size = 0u64;
        let written: Result<()> = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                let upload = w.0.as_mut().expect("open until finished");
                // Bound memory: wait while too many parts are in flight.
                upload.wait_for_capacity(4).await.map_err(|e| Error::about(key, e))?;
                upload.put(chunk);
            }
            Ok(())
        }
        .await;
        let upload = w.0.take().expect("open until finished");
        match written {
            Ok(()) => upload.finish().await.map_err(|e| Error::about(key, e))?,
            Err(e) => {
                upload.abort().await.ok();
                return Err(e);
            }
        };
        Ok(size)
    }

    async fn get(&self, key: &Key) -> Result<Bytes> {
        Ok(self.0.get(&key.path()).await?.bytes().await?)
    }

    async fn get_stream(&self, key: &Key, range: Option<Range<u64>>) -> Result<(ObjectMeta, ByteStream)> {
        let opts = object_store::GetOptions { range: range.map(Into::into), ..Default::default() };
        let res = self.0.get_opts(&key.path(), opts).await?;
        let m = meta(res.meta.clone());
        let stream = res.into_stream().map_err(|e| std::io::Error::other(e.to_string())).boxed();
        Ok((m, stream))
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>> {
        match self.0.head(&key.path()).await {
            Ok(m) => Ok(Some(meta(m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: Option<&Key>) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.map(Key::path);
        let mut out: Vec<ObjectMeta> = self.0.list(prefix.as_ref()).map_ok(meta).try_collect().await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        if self.head(key).await?.is_none() {
            return Ok(false);
        }
        match self.0.delete(&key.path()).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for good in ["a", "bucket/key.txt", "b/deep/er/x", "b/.hidden"] {
            assert!(Key::new(good).is_ok(), "{good}");
        }
        for bad in ["", "/etc/passwd", "a/../b", "..", "a//b", "a/./b", "a\\b", "a\nb", "a/"] {
            assert!(Key::new(bad).is_err(), "{bad:?}");
        }
    }
}
