//! Bundles: a process function's directory as a deterministic tar archive,
//! addressed by its sha256, unpacked once per digest on each worker.

use crate::Error;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// sha256 of `bytes`, in hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Packs `dir` into a tar archive whose bytes depend only on the files' names,
/// contents and executable bits (sorted entries, zero times and owners).
/// Symbolic links and special files are refused.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, Error> {
    if !dir.is_dir() {
        return Err(Error::InvalidBundle(format!("{} is not a directory", dir.display())));
    }
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut builder = tar::Builder::new(Vec::new());
    for rel in files {
        let full = dir.join(&rel);
        let meta = std::fs::metadata(&full)?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, &rel, std::io::empty())?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            builder.append_data(&mut header, &rel, std::fs::File::open(&full)?)?;
        }
    }
    Ok(builder.into_inner()?)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        let rel = path.strip_prefix(root).expect("below root").to_path_buf();
        if ty.is_symlink() {
            return Err(Error::InvalidBundle(format!(
                "{} is a symbolic link; bundles hold regular files only",
                rel.display()
            )));
        } else if ty.is_dir() {
            if rel.file_name().is_some_and(|n| n == "__pycache__" || n == ".git") {
                continue;
            }
            out.push(rel);
            collect(root, &path, out)?;
        } else if ty.is_file() {
            out.push(rel);
        } else {
            return Err(Error::InvalidBundle(format!("{} is not a regular file", rel.display())));
        }
    }
    Ok(())
}

/// Unpacks `archive` into `dest` unless it is already there. The directory
/// appears whole or not at all (unpacked beside it, then renamed).
pub fn unpack_once(archive: &[u8], dest: &Path) -> Result<(), Error> {
    if dest.is_dir() {
        return Ok(());
    }
    let parent = dest.parent().ok_or_else(|| Error::InvalidBundle("no parent directory".into()))?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempdir_in(parent)?;
    let mut ar = tar::Archive::new(archive);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let ty = entry.header().entry_type();
        if !(ty.is_file() || ty.is_dir()) {
            return Err(Error::InvalidBundle("bundles hold regular files and directories only".into()));
        }
        // `unpack_in` refuses paths that would land outside `tmp`.
        if !entry.unpack_in(&tmp)? {
            return Err(Error::InvalidBundle("an entry's path escapes the bundle".into()));
        }
    }
    match std::fs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        // Another slot unpacked the same digest first.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn tempdir_in(parent: &Path) -> Result<PathBuf, Error> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = parent.join(format!(".unpack-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_is_deterministic_and_round_trips() {
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir(a.path().join("sub")).unwrap();
        std::fs::write(a.path().join("main.py"), b"print(1)").unwrap();
        std::fs::write(a.path().join("sub/data.txt"), b"x").unwrap();
        let one = pack_dir(a.path()).unwrap();
        let two = pack_dir(a.path()).unwrap();
        assert_eq!(digest(&one), digest(&two));
        std::fs::write(a.path().join("main.py"), b"print(2)").unwrap();
        assert_ne!(digest(&pack_dir(a.path()).unwrap()), digest(&one));

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("b");
        unpack_once(&one, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("main.py")).unwrap(), b"print(1)");
        assert_eq!(std::fs::read(dest.join("sub/data.txt")).unwrap(), b"x");
        unpack_once(&one, &dest).unwrap();
    }

    #[test]
    fn symlinks_are_refused() {
        let a = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", a.path().join("p")).unwrap();
        assert!(matches!(pack_dir(a.path()), Err(Error::InvalidBundle(_))));
    }
}
