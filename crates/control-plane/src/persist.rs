//! The state file: the config in force, saved atomically as readable JSON so
//! a restarted control plane serves the same resources at the same version.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use legate_api::legate::config::v1::StoredConfig;

use crate::json::{self, JsonError};
use crate::snapshot::StoredResource;

/// Name of the state file inside the data directory.
pub const STATE_FILE_NAME: &str = "config.json";

/// Name of the folder, beside the state file, that keeps each recent
/// version as `<version>.json` in the state file's layout.
pub const HISTORY_DIR_NAME: &str = "history";

const STORED_CONFIG_MESSAGE: &str = "legate.config.v1.StoredConfig";

/// A state file that could not be read or written. Each variant names the
/// file, so the operator knows what to inspect.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("failed to create data directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read state file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {} is corrupt; fix or move it away, because it is never overwritten with an empty config", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: JsonError,
    },
    #[error("failed to encode the config for {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: JsonError,
    },
    #[error("failed to write state file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The state file of one data directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// Uses `config.json` in `data_dir`, creating the directory if needed.
    pub fn in_dir(data_dir: &Path) -> Result<Self, PersistError> {
        fs::create_dir_all(data_dir).map_err(|source| PersistError::CreateDir { path: data_dir.to_path_buf(), source })?;
        Ok(StateFile { path: data_dir.join(STATE_FILE_NAME) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the saved config; `None` when no file exists yet.
    pub fn load(&self) -> Result<Option<StoredConfig>, PersistError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PersistError::Read { path: self.path.clone(), source }),
        };

        json::from_json(&text, STORED_CONFIG_MESSAGE)
            .map(Some)
            .map_err(|source| PersistError::Corrupt { path: self.path.clone(), source })
    }

    /// Replaces the file with `config`, as [`StateFile::save_parts`] does.
    pub fn save(&self, config: &StoredConfig) -> Result<(), PersistError> {
        let text = json::to_json(config, STORED_CONFIG_MESSAGE)
            .map_err(|source| PersistError::Encode { path: self.path.clone(), source })?;
        self.write(&text)
    }

    /// Replaces the file with `config` plus `resources` as its `resources`
    /// list, so that a crash leaves either the old or the new file and never
    /// a partial one. Each resource's JSON is cached on it, so only those
    /// that are new since the last save are encoded: encoding all of 10,000
    /// resources through reflection took about half of an apply's CPU.
    pub fn save_parts(&self, config: &StoredConfig, resources: &[Arc<StoredResource>]) -> Result<(), PersistError> {
        let encode_error = |source| PersistError::Encode { path: self.path.clone(), source };
        let header = json::to_json(config, STORED_CONFIG_MESSAGE).map_err(encode_error)?;
        let mut items = Vec::with_capacity(resources.len());
        for resource in resources {
            items.push(resource.json().map_err(encode_error)?);
        }
        self.write(&with_resources(&header, &items))
    }

    /// Writes `text` to a temporary file in the same directory, syncs it and
    /// renames it over the state file, then syncs the directory so the
    /// rename is durable.
    fn write(&self, text: &str) -> Result<(), PersistError> {
        let temporary = self.temporary_path();
        let written = write_synced(&temporary, text.as_bytes()).and_then(|()| fs::rename(&temporary, &self.path));
        if let Err(source) = written {
            let _ = fs::remove_file(&temporary);
            return Err(PersistError::Write { path: self.path.clone(), source });
        }

        // NOTE: if only this sync fails, the new file is already in place
        // although the caller reports the apply as failed.
        sync_directory(self.path.parent().unwrap_or(Path::new(".")))
            .map_err(|source| PersistError::Write { path: self.path.clone(), source })
    }

    /// Returns the folder of earlier versions beside this file.
    pub fn history(&self) -> HistoryDir {
        HistoryDir { path: self.path.with_file_name(HISTORY_DIR_NAME) }
    }

    fn temporary_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        self.path.with_file_name(name)
    }
}

/// Recent versions, one file each, for `ListHistory` and `Rollback`.
#[derive(Debug, Clone)]
pub struct HistoryDir {
    path: PathBuf,
}

impl HistoryDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves one version, atomically as the state file is saved.
    pub fn save(&self, config: &StoredConfig) -> Result<(), PersistError> {
        fs::create_dir_all(&self.path).map_err(|source| PersistError::CreateDir { path: self.path.clone(), source })?;
        self.file(config.version).save(config)
    }

    /// Keeps the state file, just saved with `version`, as that version's
    /// history file without encoding the config again: a hard link, which
    /// keeps this text because each save renames a new file over the state
    /// file. Encoding 10,000 resources as JSON takes about as long as the
    /// rest of an apply.
    pub fn link_state_file(&self, state_file: &StateFile, version: u64) -> Result<(), PersistError> {
        fs::create_dir_all(&self.path).map_err(|source| PersistError::CreateDir { path: self.path.clone(), source })?;
        let target = self.file(version).path;
        let linked = match fs::remove_file(&target) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => fs::hard_link(&state_file.path, &target),
        };
        linked
            .and_then(|()| sync_directory(&self.path))
            .map_err(|source| PersistError::Write { path: target, source })
    }

    /// Reads every saved version, oldest first. A file that cannot be read
    /// or parsed is skipped with a warning, because history is an aid and
    /// the state file alone decides what is in force.
    pub fn load_all(&self) -> Vec<StoredConfig> {
        let mut versions: Vec<u64> = match fs::read_dir(&self.path) {
            Ok(entries) => entries.filter_map(|entry| version_of(&entry.ok()?.file_name().to_string_lossy())).collect(),
            Err(_) => return Vec::new(),
        };
        versions.sort_unstable();
        versions
            .into_iter()
            .filter_map(|version| match self.file(version).load() {
                Ok(config) => config,
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), version, "skipping an unreadable history file");
                    None
                }
            })
            .collect()
    }

    /// Deletes the files of versions older than `oldest_kept`.
    pub fn prune(&self, oldest_kept: u64) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            if version_of(&entry.file_name().to_string_lossy()).is_some_and(|version| version < oldest_kept) {
                if let Err(error) = fs::remove_file(entry.path()) {
                    tracing::warn!(%error, path = %entry.path().display(), "failed to delete an old history file");
                }
            }
        }
    }

    fn file(&self, version: u64) -> StateFile {
        StateFile { path: self.path.join(format!("{version}.json")) }
    }
}

/// Adds a `resources` list of the indented JSON `items` as the first field
/// of `header`, an indented JSON object written without one.
fn with_resources(header: &str, items: &[&str]) -> String {
    if items.is_empty() {
        return header.to_string();
    }
    let length = header.len() + items.iter().map(|item| item.len() + item.len() / 8 + 8).sum::<usize>() + 32;
    let mut text = String::with_capacity(length);
    text.push_str("{\n  \"resources\": [");
    for (index, item) in items.iter().enumerate() {
        text.push_str(if index == 0 { "\n    " } else { ",\n    " });
        text.push_str(&item.replace('\n', "\n    "));
    }
    text.push_str("\n  ]");
    let rest = header.trim_end().strip_prefix('{').unwrap_or(header).trim_start_matches('\n');
    if rest.starts_with('}') {
        text.push('\n');
    } else {
        text.push_str(",\n");
    }
    text.push_str(rest);
    text.push('\n');
    text
}

fn version_of(file_name: &str) -> Option<u64> {
    file_name.strip_suffix(".json")?.parse().ok()
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(unix)]
fn sync_directory(directory: &Path) -> io::Result<()> {
    fs::File::open(directory)?.sync_all()
}

// NOTE: Windows cannot open a directory as a file, so the rename there is
// durable only once the file system flushes on its own.
#[cfg(not(unix))]
fn sync_directory(_directory: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_resources;

    #[test]
    fn resources_lead_the_header_fields() {
        let header = "{\n  \"version\": \"2\"\n}\n";
        let text = with_resources(header, &["{\n  \"name\": \"a\"\n}", "{\n  \"name\": \"b\"\n}"]);

        let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(json["version"], "2");
        assert_eq!(json["resources"][1]["name"], "b");
        assert!(text.starts_with("{\n  \"resources\": [\n    {\n      \"name\": \"a\"\n    },\n"), "items are indented: {text}");
    }

    #[test]
    fn resources_fit_an_empty_header() {
        let text = with_resources("{}\n", &["{}"]);

        assert_eq!(text, "{\n  \"resources\": [\n    {}\n  ]\n}\n");
    }

    #[test]
    fn no_resources_keeps_the_header() {
        assert_eq!(with_resources("{}\n", &[]), "{}\n");
    }
}
