//! One module per subcommand: its arguments (`Args`) and `run`.

pub mod canonicalize;
pub mod check_bundle;
pub mod prove;
pub mod reconcile;
pub mod search;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use sealtrail_store::ObjectStore;
use sealtrail_store::args::StoreArgs;
use sealtrail_store::s3::S3Store;

/// The pinned trust bundle in `path`.
pub fn load_trust(path: &std::path::Path) -> anyhow::Result<sealtrail_core::trust::Trust> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("trust bundle {}: {e}", path.display()))?;
    Ok(sealtrail_core::trust::Trust::parse(&bytes)?)
}

/// The runtime a subcommand's store and signer calls run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The store to read, its key prefix, and the S3 client if it is one.
pub type OpenedStore = (Arc<dyn ObjectStore>, String, Option<Arc<S3Store>>);

pub fn open_store(rt: &tokio::runtime::Runtime, args: StoreArgs) -> anyhow::Result<OpenedStore> {
    let opened = rt.block_on(args.open_for_reading())?;
    Ok((opened.store, opened.prefix, opened.s3))
}

/// `90s`, `30m`, `1h`, `2d`, a bare number of seconds, or `off`.
pub fn parse_duration_opt(s: &str) -> Result<Option<Duration>, String> {
    if s == "off" {
        return Ok(None);
    }
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 90s, 30m, 1h, 2d or off"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(|secs| Some(Duration::from_secs(secs)))
        .ok_or_else(|| format!("{s:?}: too large"))
}
