//! Source files: the database of loaded texts, and the trait through which the compiler
//! reads files. The compiler itself does no I/O; the CLI, tests and the language server
//! each supply a [`SourceLoader`].

use crate::span::{FileId, LineIndex};

/// Reads source files for the compiler. Paths use `/` separators and are the ones the user
/// gave (or an import resolved relative to the importing file).
pub trait SourceLoader {
    /// The raw bytes of the file, or a short reason it cannot be read ("no such file").
    fn read(&self, path: &str) -> Result<Vec<u8>, String>;
}

pub struct SourceFile {
    pub path: String,
    pub text: String,
    pub line_index: LineIndex,
}

#[derive(Default)]
pub struct SourceDb {
    files: Vec<SourceFile>,
}

impl SourceDb {
    pub fn add(&mut self, path: impl Into<String>, text: impl Into<String>) -> FileId {
        let text = text.into();
        self.files.push(SourceFile {
            path: path.into(),
            line_index: LineIndex::new(&text),
            text,
        });
        FileId(self.files.len() as u32 - 1)
    }

    pub fn find(&self, path: &str) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.path == path)
            .map(|i| FileId(i as u32))
    }

    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn display_name(&self, id: FileId) -> &str {
        &self.file(id).path
    }

    pub fn text(&self, id: FileId) -> &str {
        &self.file(id).text
    }

    pub fn line_col(&self, id: FileId, offset: usize) -> (usize, usize) {
        let file = self.file(id);
        file.line_index.line_col(&file.text, offset)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = FileId> {
        (0..self.files.len() as u32).map(FileId)
    }
}

/// Resolves `import` relative to the directory of `from`, lexically (`.` and `..` folded).
pub fn resolve_import(from: &str, import: &str) -> String {
    let mut parts: Vec<&str> = if import.starts_with('/') {
        Vec::new()
    } else {
        let mut dir: Vec<&str> = from.split('/').collect();
        dir.pop();
        dir
    };
    for part in import.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != ".." && !p.is_empty()) => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if import.starts_with('/') || from.starts_with('/') {
        if joined.starts_with('/') {
            joined
        } else {
            format!("/{joined}")
        }
    } else {
        joined
    }
}

/// A loader over an in-memory map, for tests and the language server's open buffers.
#[derive(Default)]
pub struct MemoryLoader {
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
}

impl MemoryLoader {
    pub fn with(mut self, path: &str, text: &str) -> MemoryLoader {
        self.files
            .insert(path.to_string(), text.as_bytes().to_vec());
        self
    }
}

impl SourceLoader for MemoryLoader {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| "no such file".to_string())
    }
}

/// Reads files from disk. This is the one place the compiler library touches the file
/// system, and only the binaries (`flowc`, `flowrt`, `flow-lsp`) construct it: the compiler's
/// own code receives files through the [`SourceLoader`] trait.
pub struct FsLoader;

/// The largest `.flow` file read (a generated 200,000-line program is about 7.4 MB).
pub const MAX_SOURCE_BYTES: u64 = 64 << 20;

impl SourceLoader for FsLoader {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        read_regular_file(std::path::Path::new(path), MAX_SOURCE_BYTES)
    }
}

/// The bytes of the regular file at `path`, refused when it is anything else (a directory, a
/// FIFO that would block, a device such as `/dev/zero` that never ends) or longer than
/// `limit` bytes. Every file a Flow binary reads goes through here, so no read is unbounded.
pub fn read_regular_file(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    // `metadata` follows symbolic links: a link to a regular file is read, a link to a FIFO
    // is refused before anything opens it (opening a FIFO blocks until a writer comes).
    let metadata = std::fs::metadata(path).map_err(|e| describe_io(&e))?;
    if metadata.is_dir() {
        return Err("it is a directory".to_string());
    }
    if !metadata.is_file() {
        return Err(
            "it is not a regular file (a FIFO, device or socket); give the path of a file"
                .to_string(),
        );
    }
    if metadata.len() > limit {
        return Err(too_long(metadata.len(), limit));
    }
    let file = std::fs::File::open(path).map_err(|e| describe_io(&e))?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // The file may grow between `metadata` and the read: read one byte past the limit at most.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| describe_io(&e))?;
    if bytes.len() as u64 > limit {
        return Err(too_long(bytes.len() as u64, limit));
    }
    Ok(bytes)
}

fn too_long(found: u64, limit: u64) -> String {
    format!(
        "it is longer than the {} this reads ({found} bytes)",
        show_size(limit)
    )
}

/// `64 MiB`, `512 KiB`, `100 bytes`.
pub fn show_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// A short, stable description of an I/O error for messages.
pub fn describe_io(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = std::env::temp_dir().join(format!("flow-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder");
        let file = dir.join("a.flow");
        std::fs::write(&file, "0123456789").expect("a file");
        assert_eq!(
            read_regular_file(&file, 10).as_deref(),
            Ok(&b"0123456789"[..])
        );
        let long = read_regular_file(&file, 9).expect_err("too long");
        assert!(long.contains("longer than the 9 bytes"), "{long}");
        assert_eq!(
            read_regular_file(&dir, 10).expect_err("a directory"),
            "it is a directory"
        );
        let device = read_regular_file(std::path::Path::new("/dev/zero"), 10)
            .expect_err("a device never ends");
        assert!(device.contains("not a regular file"), "{device}");
        assert_eq!(
            read_regular_file(&dir.join("missing"), 10).expect_err("missing"),
            "no such file or directory"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(show_size(64 << 20), "64 MiB");
        assert_eq!(show_size(1536), "1536 bytes");
    }

    #[test]
    fn imports_resolve_relative_to_the_importing_file() {
        assert_eq!(
            resolve_import("examples/a.flow", "types.flow"),
            "examples/types.flow"
        );
        assert_eq!(
            resolve_import("examples/a.flow", "../lib/t.flow"),
            "lib/t.flow"
        );
        assert_eq!(resolve_import("a.flow", "./b.flow"), "b.flow");
        assert_eq!(resolve_import("/w/x/a.flow", "../b.flow"), "/w/b.flow");
    }
}
