//! Crash-safe writes: everything is written under a temporary name, fsynced, and renamed
//! into place, so a reader sees either the old content or the complete new content.
//!
//! On POSIX filesystems `rename(2)` within one directory is atomic; fsyncing the file (and the
//! parent directory after the rename) makes the result survive a power loss as well.
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Suffix marking a directory that is still being written (`<final>.tmp-<pid>`).
pub const TMP_MARKER: &str = ".tmp-";

/// fsync one directory so that entries created or renamed in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let handle = File::open(dir).with_context(|| format!("opening directory {} to fsync it", dir.display()))?;
    handle.sync_all().with_context(|| format!("fsync of directory {}", dir.display()))
}

/// fsync every file and directory below `dir` (and `dir` itself).
pub fn fsync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let kind = entry.file_type().with_context(|| format!("reading the type of {}", path.display()))?;
        if kind.is_dir() {
            fsync_tree(&path)?;
        } else if kind.is_file() {
            let file = File::open(&path).with_context(|| format!("opening {} to fsync it", path.display()))?;
            file.sync_all().with_context(|| format!("fsync of {}", path.display()))?;
        }
    }
    fsync_dir(dir)
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync
/// parent. Missing parent directories are created.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = AtomicFile::create(path)?;
    file.file().write_all(bytes).with_context(|| format!("writing {}", file.tmp.display()))?;
    file.commit()?;
    Ok(())
}

/// A file written as a stream under a temporary name beside `target`. `commit()` fsyncs it
/// and renames it into place; dropping it uncommitted removes the temporary file, so a
/// failed write never leaves a half-written file under the final name.
pub struct AtomicFile {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<File>,
    committed: bool,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        let parent = parent_of(target);
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let name = target
            .file_name()
            .with_context(|| format!("{} has no file name", target.display()))?
            .to_string_lossy()
            .into_owned();
        let tmp = parent.join(format!("{name}{TMP_MARKER}{}", std::process::id()));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self { tmp, target: target.to_path_buf(), file: Some(file), committed: false })
    }

    /// The open temporary file (clone the handle to wrap it in a writer).
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("open until committed")
    }

    pub fn commit(mut self) -> Result<PathBuf> {
        let file = self.file.take().expect("open until committed");
        file.sync_all().with_context(|| format!("fsync of {}", self.tmp.display()))?;
        drop(file);
        fs::rename(&self.tmp, &self.target)
            .with_context(|| format!("renaming {} to {}", self.tmp.display(), self.target.display()))?;
        self.committed = true;
        fsync_dir(&parent_of(&self.target))?;
        Ok(self.target.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A directory under construction. Fill `path()`, then `commit()`; dropping it uncommitted
/// removes the temporary directory, so a failed write never leaves a half-written result
/// under the final name.
pub struct AtomicDir {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicDir {
    /// Start writing `target` (its parent must exist). Any stale temporary directory of this
    /// process for the same target is removed first.
    pub fn create(target: &Path) -> Result<Self> {
        let parent = parent_of(target);
        let name = target
            .file_name()
            .with_context(|| format!("{} has no directory name", target.display()))?
            .to_string_lossy()
            .into_owned();
        let tmp = parent.join(format!("{name}{TMP_MARKER}{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
        }
        fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self { tmp, target: target.to_path_buf(), committed: false })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// fsync the contents, rename into place, fsync the parent. An existing directory at the
    /// target is replaced: it is moved aside first and removed only after the new one is in place.
    pub fn commit(mut self) -> Result<PathBuf> {
        fsync_tree(&self.tmp)?;
        let parent = parent_of(&self.target);
        let aside = if self.target.exists() {
            let name = self.target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let aside = parent.join(format!("{name}.old{TMP_MARKER}{}", std::process::id()));
            fs::rename(&self.target, &aside)
                .with_context(|| format!("moving the previous {} aside", self.target.display()))?;
            Some(aside)
        } else {
            None
        };
        if let Err(err) = fs::rename(&self.tmp, &self.target) {
            if let Some(aside) = &aside {
                let _ = fs::rename(aside, &self.target);
            }
            return Err(err).with_context(|| format!("renaming {} to {}", self.tmp.display(), self.target.display()));
        }
        self.committed = true;
        fsync_dir(&parent)?;
        if let Some(aside) = aside {
            fs::remove_dir_all(&aside).with_context(|| format!("removing {}", aside.display()))?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// True for names of directories or files that are still being written (or were abandoned
/// by a crash) and must never be read as results.
pub fn is_temporary_name(name: &str) -> bool {
    name.contains(TMP_MARKER)
}
