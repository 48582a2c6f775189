//! Reading a task's object partition.

use futures::StreamExt;
use std::ops::Range;
use stratus_blob::{Key, ObjectStore};
use stratus_core::{Failure, FailureKind, Partition};

fn internal(msg: String) -> Failure {
    Failure::new(FailureKind::Internal, msg)
}

/// The bytes of `p`, and the range of the object they are.
///
/// With `lines`, the task owns the lines that start in `[start, end)`: it
/// skips a partial first line (the previous task reads it whole) and reads
/// past `end` to the end of its last line. So no line is split, lost, or
/// read twice, whatever the chunk size.
pub async fn read_partition(
    store: &dyn ObjectStore,
    project: &str,
    p: &Partition,
) -> Result<(Vec<u8>, Range<u64>), Failure> {
    let object = Key::new(p.object.clone()).map_err(|e| internal(e.to_string()))?;
    let key = Key::user(project, &object);
    if !p.lines {
        let (_, mut s) = store.get_stream(&key, Some(p.start..p.end)).await.map_err(|e| internal(e.to_string()))?;
        let mut out = Vec::with_capacity((p.end - p.start) as usize);
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.map_err(|e| internal(format!("reading {}: {e}", p.object)))?);
        }
        return Ok((out, p.start..p.end));
    }
    let begin = p.start.saturating_sub(1);
    let (_, mut s) = store.get_stream(&key, Some(begin..p.size)).await.map_err(|e| internal(e.to_string()))?;
    let mut buf: Vec<u8> = Vec::with_capacity((p.end - begin) as usize + 4096);
    // Index in `buf` of the byte at `end - 1`: our last line ends at the first
    // newline at or after it.
    let last = (p.end - 1 - begin) as usize;
    let mut cut = None;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| internal(format!("reading {}: {e}", p.object)))?;
        let from = buf.len().max(last);
        buf.extend_from_slice(&chunk);
        if buf.len() > last
            && let Some(i) = buf[from..].iter().position(|&b| b == b'\n')
        {
            cut = Some(from + i + 1);
            break;
        }
    }
    drop(s);
    if let Some(c) = cut {
        buf.truncate(c);
    }
    let first = if p.start == 0 {
        0
    } else {
        // Skip through the first newline: the byte at start-1 tells whether
        // a line begins exactly at `start`.
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => buf.len(),
        }
    };
    let first_abs = begin + first as u64;
    if first_abs >= p.end {
        return Ok((Vec::new(), p.end..p.end));
    }
    let end_abs = begin + buf.len() as u64;
    Ok((buf[first..].to_vec(), first_abs..end_abs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Every split of several texts into chunks of every size gives back
    /// each line exactly once, in order.
    #[tokio::test]
    async fn chunks_cover_every_line_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = stratus_blob::open(&format!("file://{}", dir.path().display())).unwrap();
        let texts: [&[u8]; 5] = [
            b"alpha\nbeta\ngamma\n",
            b"no trailing newline\nlast",
            b"\n\n\nx\n\n",
            b"a-single-line-that-is-much-longer-than-the-chunks\nb\n",
            b"x",
        ];
        for (t, text) in texts.iter().enumerate() {
            let name = format!("b/t{t}");
            store.put(&Key::user("p", &Key::new(name.clone()).unwrap()), Bytes::copy_from_slice(text)).await.unwrap();
            let size = text.len() as u64;
            for chunk in 1..=size + 1 {
                let mut joined = Vec::new();
                let mut prev_end = 0;
                let mut start = 0;
                while start < size {
                    let end = (start + chunk).min(size);
                    let p = Partition { object: name.clone(), start, end, size, lines: true };
                    let (bytes, range) = read_partition(store.as_ref(), "p", &p).await.unwrap();
                    if !bytes.is_empty() {
                        assert_eq!(range.start, prev_end, "text {t} chunk {chunk}: contiguous");
                        prev_end = range.end;
                    }
                    joined.extend_from_slice(&bytes);
                    start = end;
                }
                assert_eq!(joined, *text, "text {t}, chunk size {chunk}");
            }
        }
    }
}
