//! Compiled components kept on disk, so a restart (or a push of a digest seen
//! before) loads machine code instead of compiling it again.
//!
//! An entry is named by the sha256 of the component's bytes and a key of the
//! engine's configuration (wasmtime's compatibility hash, our own settings and
//! the policy contract), so a changed engine setting or another wasmtime
//! misses instead of loading code built for another engine.
//!
//! Loading an entry runs its native code, so an entry is only trusted when:
//! - the folder and the file belong to this process's user and neither is
//!   writable by group or others (the folder is made mode 0700);
//! - its first 32 bytes are the sha256 of the rest (a torn or rotted file
//!   fails this and is compiled again);
//! - wasmtime accepts its header for this engine.
//!
//! Anything else is a miss: the component is compiled as if there were no
//! cache, and the entry is replaced. The component was verified (signature,
//! revocation, pin) before the cache is asked, so an entry is only ever
//! looked up for bytes the trust store admitted.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest::{digest, SHA256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Entries kept; the oldest beyond this are removed after each store.
const MAX_ENTRIES: usize = 64;
/// Largest artifact stored (a component this large is compiled every time).
const MAX_ARTIFACT_BYTES: usize = 256 << 20;
const HASH_LEN: usize = 32;

/// How a compile went with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheOutcome {
    /// No cache configured.
    #[default]
    Off,
    /// Loaded from the cache: nothing was compiled.
    Hit,
    /// Compiled, and stored for next time.
    Miss,
}

impl CacheOutcome {
    /// `off`, `hit` or `miss`, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Hit => "hit",
            Self::Miss => "miss",
        }
    }
}

/// The on-disk cache of one engine.
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CompileCache {
    /// Opens (and makes, mode 0700) `dir` for `engine`, whose settings
    /// beyond wasmtime's own are described by `settings`.
    pub(crate) fn open(dir: &Path, engine: &Engine, settings: &str) -> std::io::Result<Self> {
        make_private_dir(dir)?;
        trusted(dir, true).map_err(std::io::Error::other)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        settings.hash(&mut h);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", h.finish()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn entry(&self, bytes: &[u8]) -> PathBuf {
        let sum = hex::encode(digest(&SHA256, bytes).as_ref());
        self.dir.join(format!("{sum}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `bytes`, if a trusted entry has it.
    pub(crate) fn load(&self, engine: &Engine, bytes: &[u8]) -> Option<Component> {
        let path = self.entry(bytes);
        let loaded = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "compile cache: cannot read the entry; compiling");
                None
            }
            Ok(_) => match self.read(engine, &path) {
                Ok(c) => Some(c),
                Err(why) => {
                    tracing::warn!(file = %path.display(), why, "compile cache: entry refused; compiling again");
                    let _ = std::fs::remove_file(&path);
                    None
                }
            },
        };
        match &loaded {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        loaded
    }

    fn read(&self, engine: &Engine, path: &Path) -> Result<Component, String> {
        trusted(path, false)?;
        let data = std::fs::read(path).map_err(|e| e.to_string())?;
        if data.len() < HASH_LEN {
            return Err("shorter than its checksum".into());
        }
        let (sum, artifact) = data.split_at(HASH_LEN);
        if digest(&SHA256, artifact).as_ref() != sum {
            return Err("checksum does not match (torn or corrupted file)".into());
        }
        // SAFETY: `deserialize` runs the artifact's machine code later, so it
        // must come from `Component::serialize` of a compatible engine. This
        // one does: the file is ours alone (owner and mode checked above), it
        // was written by `store` below, its checksum matches, and wasmtime
        // checks its header against this engine's configuration and refuses
        // another version or setting.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, artifact) };
        component.map_err(|e| format!("{e:#}"))
    }

    /// Keeps `component` (compiled from `bytes`) for next time; failures are
    /// logged and change nothing else.
    pub(crate) fn store(&self, component: &Component, bytes: &[u8]) {
        let path = self.entry(bytes);
        let result = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|artifact| {
                if artifact.len() > MAX_ARTIFACT_BYTES {
                    return Err(format!(
                        "{} bytes, over the {MAX_ARTIFACT_BYTES} an entry may have",
                        artifact.len()
                    ));
                }
                write_entry(&path, &artifact).map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => self.prune(),
            Err(why) => {
                tracing::warn!(file = %path.display(), why, "compile cache: cannot store the compiled component")
            }
        }
    }

    /// Removes the oldest entries beyond [`MAX_ENTRIES`].
    fn prune(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if entries.len() <= MAX_ENTRIES {
            return;
        }
        entries.sort();
        for (_, path) in &entries[..entries.len() - MAX_ENTRIES] {
            let _ = std::fs::remove_file(path);
        }
    }

    /// (hits, misses) since the engine started.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// Writes checksum + artifact to a private temp file, then renames it into
/// place: a reader sees the old entry, no entry or the whole new one.
fn write_entry(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "tmp.{}.{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(digest(&SHA256, artifact).as_ref())?;
        f.write_all(artifact)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The cache trusts only what this user alone can write.
#[cfg(unix)]
fn trusted(path: &Path, is_dir: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if is_dir != m.is_dir() || m.file_type().is_symlink() {
        return Err(format!(
            "{}: not a plain {}",
            path.display(),
            if is_dir { "folder" } else { "file" }
        ));
    }
    // SAFETY: geteuid has no arguments and cannot fail.
    #[allow(unsafe_code)]
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(format!(
            "{}: owned by uid {}, not by this process's uid {me}",
            path.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: writable by group or others (mode {:o}); the compile cache must be private",
            path.display(),
            m.mode() & 0o777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn trusted(_path: &Path, _is_dir: bool) -> Result<(), String> {
    Err("the compile cache checks file ownership, which needs a Unix system".into())
}
