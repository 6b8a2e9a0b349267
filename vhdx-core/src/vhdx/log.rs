//! The VHDX log (MS-VHDX §2.3). PLACEHOLDER being replaced in this session by the log work.

use crate::error::{Error, Result};
use crate::format::vhdx::header::Header;
use crate::ops::info::LogInfo;
use crate::report::Finding;
use crate::storage::Storage;
use std::sync::Arc;

/// Detects a dirty log and replays it into an overlay; returns the storage to read through.
pub fn open_log(
    storage: Arc<dyn Storage>,
    h: &Header,
    _findings: &mut Vec<Finding>,
) -> Result<(Arc<dyn Storage>, LogInfo)> {
    let info = LogInfo {
        state: "clean".into(),
        entries: 0,
        guid: h.log_guid.to_string(),
        offset: h.log_offset.get(),
        length: h.log_length.get(),
        replayed_in_memory: false,
    };
    if !h.log_guid.is_nil() {
        return Err(Error::unsupported(
            "VHDX log",
            h.log_offset.get(),
            "dirty log",
        ));
    }
    Ok((storage, info))
}
