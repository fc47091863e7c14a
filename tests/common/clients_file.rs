//! A clients file (`CLIENTS_FILE`) in a directory of its own, rewritten whole (by rename)
//! so nexus's reload never reads half a file.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::tempdir::TempDir;

pub struct ClientsFile {
    _dir: TempDir,
    pub path: PathBuf,
}

impl ClientsFile {
    /// A file holding `clients` (the `clients` array's value).
    pub fn new(clients: Value) -> ClientsFile {
        let dir = TempDir::new("clients");
        let path = dir.path().join("clients.json");
        let file = ClientsFile { _dir: dir, path };
        file.write(clients);
        file
    }

    /// Replaces the file's clients.
    pub fn write(&self, clients: Value) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, json!({ "clients": clients }).to_string()).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}
