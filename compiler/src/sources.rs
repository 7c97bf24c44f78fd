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
/// system, and only the binaries (`flowc`, `flowrt`) construct it: the compiler's own code
/// receives files through the [`SourceLoader`] trait.
pub struct FsLoader;

impl SourceLoader for FsLoader {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        let metadata = std::fs::metadata(path).map_err(|e| describe_io(&e))?;
        if metadata.is_dir() {
            return Err("it is a directory".to_string());
        }
        std::fs::read(path).map_err(|e| describe_io(&e))
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
