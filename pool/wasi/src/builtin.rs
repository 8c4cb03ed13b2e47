//! The built-in tools, built from `tools/` by this crate's build script and
//! embedded: `echo`, `hash.sha256`, `fs.read`, `fs.write`, `sleep`.

use std::path::{Path, PathBuf};

/// One built-in tool.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The tool's name.
    pub name: &'static str,
    /// Where its manifest lives in the source tree (for messages).
    pub manifest_path: &'static str,
    /// The manifest's text.
    pub manifest: &'static str,
    /// The wasm32-wasip1 module.
    pub module: &'static [u8],
}

/// Every built-in tool.
pub static BUILTINS: &[Builtin] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The built-in tool `name`.
pub fn get(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The directory the build staged the built-ins in (`<name>.toml` beside
/// `<name>.wasm`), usable as a tools directory while the build tree exists.
pub fn build_dir() -> &'static Path {
    Path::new(env!("TOOLPLANE_BUILTIN_DIR"))
}

/// Writes the built-ins to `dir` as a tools directory.
///
/// # Errors
///
/// A file cannot be written.
pub fn install(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for b in BUILTINS {
        let m = dir.join(format!("{}.toml", b.name));
        let w = dir.join(format!("{}.wasm", b.name));
        std::fs::write(&w, b.module)?;
        std::fs::write(&m, b.manifest)?;
        written.push(m);
    }
    Ok(written)
}
