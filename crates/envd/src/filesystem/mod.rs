//! `filesystem.Filesystem` Connect service. (Scaffold: filled in by the filesystem work.)

use crate::state::Envd;

pub struct FilesystemService {
    #[allow(dead_code)]
    envd: Envd,
}

impl FilesystemService {
    pub fn new(envd: Envd) -> Self {
        Self { envd }
    }
}
