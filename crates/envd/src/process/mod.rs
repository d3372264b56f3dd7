//! `process.Process` Connect service. (Scaffold: filled in by the process work.)

use crate::state::Envd;

pub struct ProcessService {
    #[allow(dead_code)]
    envd: Envd,
}

impl ProcessService {
    pub fn new(envd: Envd) -> Self {
        Self { envd }
    }
}
