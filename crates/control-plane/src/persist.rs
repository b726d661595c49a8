//! The state file: the config in force, saved atomically as an encoded
//! `legate.config.v1.StoredConfig` (the message the etcd backend stores), so
//! a restarted control plane serves the same resources at the same version.
//!
//! The file was indented proto3 JSON before. Encoding 10,000 new resources
//! as JSON by reflection, and writing the larger file, took about two thirds
//! of the control plane's CPU in that apply. The JSON file was about six
//! times larger, so its sync took longer too. A data directory from then still loads: without `config.pb`,
//! a `config.json` is read and converted. `legate get` prints the config in
//! force as JSON.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use legate_api::legate::config::v1::StoredConfig;
use prost::Message;

use crate::json::{self, JsonError};
use crate::snapshot::StoredResource;

/// Name of the state file inside the data directory.
pub const STATE_FILE_NAME: &str = "config.pb";

/// Name of the state file that earlier releases wrote, as proto3 JSON.
pub const JSON_STATE_FILE_NAME: &str = "config.json";

/// Name of the folder, beside the state file, that keeps each recent
/// version as `<version>.pb` in the state file's format.
pub const HISTORY_DIR_NAME: &str = "history";

const STORED_CONFIG_MESSAGE: &str = "legate.config.v1.StoredConfig";

/// Name the JSON state file of an earlier release gets once converted.
pub const CONVERTED_JSON_FILE_NAME: &str = "config.json.converted";

/// Field number of `resources` in `StoredConfig`.
const RESOURCES_FIELD: u32 = 2;

/// Field number of `checksum` in `StoredConfig`.
const CHECKSUM_FIELD: u32 = 9;

/// Length of the encoded `checksum` field: a one-byte key and 8 bytes.
const CHECKSUM_LENGTH: usize = 9;

/// The formats a state file or history file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Binary,
    /// Proto3 JSON, as earlier releases wrote it. It is read, never written.
    Json,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Binary => "pb",
            Format::Json => "json",
        }
    }
}

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
        source: prost::DecodeError,
    },
    #[error("state file {} is corrupt: it is cut short or was changed, because its checksum does not match; fix or move it away, because it is never overwritten with an empty config", path.display())]
    Checksum { path: PathBuf },
    #[error("state file {} is corrupt; fix or move it away, because it is never overwritten with an empty config", path.display())]
    CorruptJson {
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
    /// Uses `config.pb` in `data_dir`, creating the directory if needed.
    pub fn in_dir(data_dir: &Path) -> Result<Self, PersistError> {
        fs::create_dir_all(data_dir).map_err(|source| PersistError::CreateDir { path: data_dir.to_path_buf(), source })?;
        Ok(StateFile { path: data_dir.join(STATE_FILE_NAME) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the saved config; `None` when no file exists yet. Without a
    /// state file, a `config.json` from an earlier release is read, saved
    /// as the state file, and renamed to `config.json.converted`, which an
    /// earlier release no longer reads.
    pub fn load(&self) -> Result<Option<StoredConfig>, PersistError> {
        if let Some(config) = read_config(&self.path, Format::Binary)? {
            return Ok(Some(config));
        }
        let json_path = self.path.with_file_name(JSON_STATE_FILE_NAME);
        let Some(config) = read_config(&json_path, Format::Json)? else {
            return Ok(None);
        };

        self.save(&config)?;
        let converted = self.path.with_file_name(CONVERTED_JSON_FILE_NAME);
        if let Err(error) = fs::rename(&json_path, &converted) {
            tracing::warn!(%error, path = %json_path.display(), "failed to rename the converted JSON state file");
        }
        tracing::info!(from = %json_path.display(), to = %self.path.display(), "converted the JSON state file of an earlier release");
        Ok(Some(config))
    }

    /// Replaces the file with `config`, as [`StateFile::save_parts`] does.
    pub fn save(&self, config: &StoredConfig) -> Result<(), PersistError> {
        self.write(&encode_state(config))
    }

    /// Replaces the file with `config` plus `resources` as its `resources`
    /// list, so that a crash leaves either the old or the new file and never
    /// a partial one. Each resource is already encoded for the proxies, so
    /// the file is those bytes with a field key and a length before each.
    pub fn save_parts(&self, config: &StoredConfig, resources: &[Arc<StoredResource>]) -> Result<(), PersistError> {
        let mut bytes = config.encode_to_vec();
        bytes.reserve(resources.iter().map(|resource| resource.encoded.len() + 8).sum::<usize>() + CHECKSUM_LENGTH);
        for resource in resources {
            prost::encoding::encode_key(RESOURCES_FIELD, prost::encoding::WireType::LengthDelimited, &mut bytes);
            prost::encoding::encode_varint(resource.encoded.len() as u64, &mut bytes);
            bytes.extend_from_slice(&resource.encoded);
        }
        self.write(&sealed(bytes))
    }

    /// Writes `bytes` to a temporary file in the same directory, syncs it
    /// and renames it over the state file, then syncs the directory so the
    /// rename is durable.
    fn write(&self, bytes: &[u8]) -> Result<(), PersistError> {
        let temporary = self.temporary_path();
        let written = write_synced(&temporary, bytes).and_then(|()| fs::rename(&temporary, &self.path));
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

/// Reads the config at `path` in `format`; `None` when there is no file.
fn read_config(path: &Path, format: Format) -> Result<Option<StoredConfig>, PersistError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Read { path: path.to_path_buf(), source }),
    };

    let config = match format {
        Format::Binary => {
            let fields = unsealed(&bytes).ok_or_else(|| PersistError::Checksum { path: path.to_path_buf() })?;
            StoredConfig::decode(fields).map_err(|source| PersistError::Corrupt { path: path.to_path_buf(), source })?
        }
        Format::Json => {
            let invalid = |error| PersistError::Read { path: path.to_path_buf(), source: io::Error::new(io::ErrorKind::InvalidData, error) };
            let text = String::from_utf8(bytes).map_err(invalid)?;
            json::from_json(&text, STORED_CONFIG_MESSAGE).map_err(|source| PersistError::CorruptJson { path: path.to_path_buf(), source })?
        }
    };
    Ok(Some(config))
}

/// Encodes `config` as the state file and history files contain it, with
/// its checksum last.
pub fn encode_state(config: &StoredConfig) -> Vec<u8> {
    sealed(config.encode_to_vec())
}

/// Appends the `checksum` field over `fields`, the other encoded fields.
fn sealed(mut fields: Vec<u8>) -> Vec<u8> {
    let checksum = xxhash_rust::xxh64::xxh64(&fields, 0);
    prost::encoding::encode_key(CHECKSUM_FIELD, prost::encoding::WireType::SixtyFourBit, &mut fields);
    fields.extend_from_slice(&checksum.to_le_bytes());
    fields
}

/// Returns the fields before the `checksum` field that ends `bytes`, when
/// that checksum matches them.
fn unsealed(bytes: &[u8]) -> Option<&[u8]> {
    let (fields, trailer) = bytes.split_at_checked(bytes.len().checked_sub(CHECKSUM_LENGTH)?)?;
    let (key, checksum) = trailer.split_first()?;
    let expected_key = (CHECKSUM_FIELD << 3) | prost::encoding::WireType::SixtyFourBit as u32;
    let checksum = u64::from_le_bytes(checksum.try_into().ok()?);
    (u32::from(*key) == expected_key && xxhash_rust::xxh64::xxh64(fields, 0) == checksum).then_some(fields)
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
    /// keeps these bytes because each save renames a new file over the
    /// state file.
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

    /// Reads every saved version, oldest first, including the JSON files of
    /// an earlier release. A file that cannot be read or parsed is skipped
    /// with a warning, because history is an aid and the state file alone
    /// decides what is in force.
    pub fn load_all(&self) -> Vec<StoredConfig> {
        let mut files: Vec<(u64, Format)> = match fs::read_dir(&self.path) {
            Ok(entries) => entries.filter_map(|entry| version_of(&entry.ok()?.file_name().to_string_lossy())).collect(),
            Err(_) => return Vec::new(),
        };
        // A version saved in both formats is read from its binary file.
        files.sort_unstable_by_key(|(version, format)| (*version, *format != Format::Binary));
        files.dedup_by_key(|(version, _)| *version);

        files
            .into_iter()
            .filter_map(|(version, format)| match read_config(&self.path_of(version, format), format) {
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
            if version_of(&entry.file_name().to_string_lossy()).is_some_and(|(version, _)| version < oldest_kept) {
                if let Err(error) = fs::remove_file(entry.path()) {
                    tracing::warn!(%error, path = %entry.path().display(), "failed to delete an old history file");
                }
            }
        }
    }

    fn file(&self, version: u64) -> StateFile {
        StateFile { path: self.path_of(version, Format::Binary) }
    }

    fn path_of(&self, version: u64, format: Format) -> PathBuf {
        self.path.join(format!("{version}.{}", format.extension()))
    }
}

/// Returns the version and format of a history file's name.
fn version_of(file_name: &str) -> Option<(u64, Format)> {
    let (version, extension) = file_name.split_once('.')?;
    let format = [Format::Binary, Format::Json].into_iter().find(|format| format.extension() == extension)?;
    Some((version.parse().ok()?, format))
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
    use legate_api::legate::config::v1::StoredConfig;
    use prost::Message;

    use super::{encode_state, read_config, sealed, unsealed, version_of, Format, PersistError};

    #[test]
    fn checksum_covers_every_byte() {
        let config = StoredConfig { version: 7, applied_by: "ops".into(), ..Default::default() };
        let bytes = encode_state(&config);

        let fields = unsealed(&bytes).expect("a sealed file passes");
        assert_eq!(StoredConfig::decode(fields).unwrap(), config);
        assert_eq!(StoredConfig::decode(bytes.as_slice()).unwrap().version, 7, "the file is a StoredConfig");
        for cut in 0..bytes.len() {
            assert_eq!(unsealed(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut changed = bytes.clone();
        changed[1] ^= 1;
        assert_eq!(unsealed(&changed), None, "a changed byte");
    }

    #[test]
    fn sealed_invalid_protobuf_is_corrupt() {
        let path = std::env::temp_dir().join(format!("legate-sealed-invalid-{}.pb", std::process::id()));
        // A `resources` entry that claims 16 bytes and has one.
        std::fs::write(&path, sealed(vec![0x12, 0x10, 0x01])).expect("write file");

        let result = read_config(&path, Format::Binary);
        let _ = std::fs::remove_file(&path);

        assert!(matches!(result, Err(PersistError::Corrupt { .. })), "{result:?}");
    }

    #[test]
    fn history_file_names() {
        assert_eq!(version_of("12.pb"), Some((12, Format::Binary)));
        assert_eq!(version_of("7.json"), Some((7, Format::Json)));
        assert_eq!(version_of("7.pb.tmp-42"), None);
        assert_eq!(version_of("x.pb"), None);
        assert_eq!(version_of("12"), None);
    }
}
