//! `canonicalize`: prints `<hex leaf hash> <canonical JSON>` for each event on standard
//! input, as the ingester would store it.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use sealtrail_verifier::canonicalize;

pub fn run() -> anyhow::Result<ExitCode> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    match canonicalize::canonicalize(&input) {
        Ok(events) => {
            let mut out = Vec::new();
            for e in &events {
                canonicalize::format_line(e, &mut out);
            }
            std::io::stdout().write_all(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("sealtrail-verify canonicalize: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
