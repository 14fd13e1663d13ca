//! The compiled-artifact cache: `.cwasm` files that let the next load of the
//! same component bytes, by an engine with the same settings, skip compiling.
//!
//! A `.cwasm` is native code that wasmtime maps and runs without checking
//! it, so the cache never trusts its files:
//!
//! - it lives outside the plugin directory (by default
//!   `$XDG_CACHE_HOME/mdp/artifacts`, else `~/.cache/mdp/artifacts`; see
//!   [`default_dir`]), created mode 0700; a cache configured inside the plugin
//!   directory is refused ([`refuse_inside`]), as whoever may drop a plugin
//!   could then plant native code;
//! - every artifact carries an HMAC-SHA256 tag over its name and bytes under
//!   a per-host key kept apart from the cache (`MDP_PLUGIN_CACHE_KEY`, else
//!   `$XDG_CONFIG_HOME/mdp/artifact-cache.key` or
//!   `~/.config/mdp/artifact-cache.key`, created 0600 with 32 random bytes when
//!   missing). An artifact that does not verify is never deserialized: the
//!   component is compiled again and the artifact rewritten.

use std::io::Write as _;
use std::path::{Component as PathPart, Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;

/// Environment variable that holds the cache key itself (at least
/// [`MIN_KEY_BYTES`] bytes), instead of the key file.
pub const KEY_ENV: &str = "MDP_PLUGIN_CACHE_KEY";
/// Shortest key accepted, bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// File name of the generated key under the configuration directory.
const KEY_FILE: &str = "artifact-cache.key";
/// First bytes of every artifact file (format version 1).
const MAGIC: &[u8; 8] = b"mdpcwa1\n";
/// Length of the HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;

/// Why the artifact cache could not be used as configured.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArtifactCacheError {
    /// The cache directory is inside the plugin directory.
    #[error(
        "artifact cache {cache} is inside the plugin directory {plugins}: whoever can drop a plugin could plant native code there; choose a directory outside it (--plugin-cache / MDP_PLUGIN_CACHE)"
    )]
    InsidePluginDir {
        /// The cache directory.
        cache: String,
        /// The plugin directory.
        plugins: String,
    },
    /// The key could not be read, created or is unusable.
    #[error("artifact cache key: {0}")]
    Key(String),
    /// The cache directory could not be created.
    #[error("artifact cache {path}: {reason}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Where the cache's authentication key comes from.
#[derive(Clone, Default)]
pub enum CacheKey {
    /// [`KEY_ENV`] when set, else the per-host key file under the
    /// configuration directory (created when missing).
    #[default]
    Host,
    /// This key file (created, mode 0600, when missing).
    File(PathBuf),
    /// These bytes (tests, embedding).
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheKey::Host => f.write_str("Host"),
            CacheKey::File(p) => f.debug_tuple("File").field(p).finish(),
            CacheKey::Bytes(_) => f.write_str("Bytes(<redacted>)"),
        }
    }
}

/// An authenticated compiled-artifact cache directory.
pub struct ArtifactCache {
    dir: PathBuf,
    key: Vec<u8>,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/mdp/artifacts`, else
/// `$HOME/.cache/mdp/artifacts`; `None` when neither is set.
pub fn default_dir() -> Option<PathBuf> {
    base_dir("XDG_CACHE_HOME", ".cache").map(|d| d.join("mdp").join("artifacts"))
}

/// The default key file: `$XDG_CONFIG_HOME/mdp/artifact-cache.key`, else
/// `$HOME/.config/mdp/artifact-cache.key`; `None` when neither is set.
pub fn default_key_file() -> Option<PathBuf> {
    base_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("mdp").join(KEY_FILE))
}

/// `$var` when it is an absolute path, else `$HOME/<fallback>`.
fn base_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    let from_var = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    from_var.or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|h| h.join(fallback))
    })
}

/// Refuse a cache directory inside (or equal to) the plugin directory,
/// following symbolic links of the parts that exist.
pub fn refuse_inside(cache: &Path, plugins: &Path) -> Result<(), ArtifactCacheError> {
    let (c, p) = (resolve(cache), resolve(plugins));
    if c.starts_with(&p) {
        return Err(ArtifactCacheError::InsidePluginDir {
            cache: cache.display().to_string(),
            plugins: plugins.display().to_string(),
        });
    }
    Ok(())
}

/// `path` made absolute, `.` and `..` applied (a `..` after following the
/// symbolic links of what precedes it), and its longest existing ancestor
/// canonicalized.
fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut lexical = PathBuf::new();
    for part in absolute.components() {
        match part {
            PathPart::ParentDir => {
                lexical = lexical.canonicalize().unwrap_or(lexical);
                lexical.pop();
            }
            PathPart::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut out) = existing.canonicalize() {
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return lexical,
        }
    }
}

/// Create `dir` (and missing parents) with mode 0700.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Create `path` with mode 0600 holding `bytes`, failing if it exists.
fn create_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Read the key in `path` (hex text, or raw bytes), creating it with 32
/// random bytes (as hex) when missing.
fn key_from_file(path: &Path) -> Result<Vec<u8>, ArtifactCacheError> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        ArtifactCacheError::Key(format!("{what} {}: {e}", path.display()))
    };
    if !path.exists() {
        let mut key = [0u8; 32];
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut key)
            .map_err(|e| err("cannot generate", &e))?;
        if let Some(dir) = path.parent() {
            create_private_dir(dir).map_err(|e| err("cannot create the directory of", &e))?;
        }
        // Written under a temporary name, then linked into place, so a
        // concurrent reader never sees a half-written key and two hosts
        // creating it at once agree on one.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        create_private_file(&tmp, hex::encode(key).as_bytes())
            .map_err(|e| err("cannot write", &e))?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => tracing::info!(file = %path.display(), "created the artifact cache key"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err("cannot create", &e)),
        }
    }
    let raw = std::fs::read(path).map_err(|e| err("cannot read", &e))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the artifact cache key is readable by other users; chmod 600 it");
        }
    }
    // Hex text (as generated here), else the file's bytes as they are.
    let key = std::str::from_utf8(&raw)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok())
        .unwrap_or(raw);
    check_key_len(key)
}

fn check_key_len(key: Vec<u8>) -> Result<Vec<u8>, ArtifactCacheError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(ArtifactCacheError::Key(format!(
            "shorter than {MIN_KEY_BYTES} bytes"
        )));
    }
    Ok(key)
}

impl CacheKey {
    /// The key bytes, refusing a key file kept inside the cache `dir`.
    fn resolve(&self, dir: &Path) -> Result<Vec<u8>, ArtifactCacheError> {
        let file = match self {
            CacheKey::Bytes(b) => return check_key_len(b.clone()),
            CacheKey::Host => match std::env::var(KEY_ENV) {
                Ok(k) if !k.is_empty() => return check_key_len(k.into_bytes()),
                _ => default_key_file().ok_or_else(|| {
                    ArtifactCacheError::Key(format!(
                        "set {KEY_ENV}, XDG_CONFIG_HOME or HOME to keep a key"
                    ))
                })?,
            },
            CacheKey::File(p) => p.clone(),
        };
        if resolve(&file).starts_with(resolve(dir)) {
            return Err(ArtifactCacheError::Key(format!(
                "key file {} must be kept outside the cache {}",
                file.display(),
                dir.display()
            )));
        }
        key_from_file(&file)
    }
}

impl ArtifactCache {
    /// Open (creating it, mode 0700) the cache in `dir`, authenticated under `key`.
    pub fn open(dir: &Path, key: &CacheKey) -> Result<ArtifactCache, ArtifactCacheError> {
        create_private_dir(dir).map_err(|e| ArtifactCacheError::Dir {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(dir) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o022 != 0 {
                tracing::warn!(dir = %dir.display(), "the artifact cache is writable by other users (artifacts are still authenticated); chmod 700 it");
            }
        }
        let key = key.resolve(dir)?;
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of artifact `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn tag(&self, name: &str, bytes: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(bytes);
        mac
    }

    /// The component cached as `name`, if its file exists and its tag
    /// verifies. A file that does not verify is logged, counted and never
    /// deserialized.
    pub fn load(&self, engine: &Engine, name: &str) -> Option<Component> {
        let path = self.path(name);
        let file = std::fs::read(&path).ok()?;
        let verified = file
            .strip_prefix(MAGIC.as_slice())
            .filter(|rest| rest.len() > TAG_BYTES)
            .map(|rest| rest.split_at(TAG_BYTES))
            .filter(|(tag, body)| self.tag(name, body).verify_slice(tag).is_ok());
        let Some((_, body)) = verified else {
            tracing::warn!(path = %path.display(), "cached artifact failed authentication; recompiling instead of loading it");
            metrics::counter!("mdp_plugin_artifact_rejected_total").increment(1);
            return None;
        };
        // SAFETY: `body` carries a valid HMAC under this host's key, so it is
        // exactly what `Component::serialize` of an engine with the same
        // compatibility hash (part of `name`, which the tag covers) wrote.
        match unsafe { Component::deserialize(engine, body) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached artifact");
                None
            }
        }
    }

    /// Serialize `component` as artifact `name`, tagged (written under a
    /// temporary name, mode 0600, then renamed into place).
    pub fn store(&self, name: &str, component: &Component) -> std::io::Result<()> {
        let body = component.serialize().map_err(std::io::Error::other)?;
        let tag = self.tag(name, &body).finalize().into_bytes();
        let path = self.path(name);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut bytes = Vec::with_capacity(MAGIC.len() + TAG_BYTES + body.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&tag);
        bytes.extend_from_slice(&body);
        create_private_file(&tmp, &bytes)?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_inside_the_plugin_dir_is_refused_even_through_dots() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for inside in [
            plugins.join(".cache"),
            plugins.clone(),
            dir.path().join("x/../plugins/deep/cache"),
        ] {
            let e = refuse_inside(&inside, &plugins).unwrap_err();
            assert!(e.to_string().contains("inside the plugin directory"), "{e}");
        }
        assert!(refuse_inside(&dir.path().join("cache"), &plugins).is_ok());
        assert!(refuse_inside(&dir.path().join("plugins-cache"), &plugins).is_ok());
    }

    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config/mdp/k.key");
        let cache = dir.path().join("cache");
        let a = CacheKey::File(file.clone()).resolve(&cache).unwrap();
        let b = CacheKey::File(file.clone()).resolve(&cache).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let inside = CacheKey::File(cache.join("k.key")).resolve(&cache);
        assert!(inside.is_err());
        assert!(CacheKey::Bytes(b"short".to_vec()).resolve(&cache).is_err());
    }
}
