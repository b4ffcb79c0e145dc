//! baton's configuration: the TOML schema and whole-file validation with
//! precise errors.
//!
//! `load` = read file -> [`reader`] (TOML tree -> [`model`], collecting every
//! shape error with its position) -> [`validate`] (cross-field rules) ->
//! `Config`, or every [`Diagnostic`] at once.
mod diagnostic;
pub mod duration;
pub mod model;
mod names;
mod reader;
pub mod schema;
mod validate;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use model::*;
pub use validate::Host;

use std::path::Path;

/// Reads, parses and validates a configuration file against the real host
/// (its CPUs; not its interfaces: a port may appear later).
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    load_for(path, &Host::this_machine())
}

/// Reads, parses and validates a configuration file against `host`.
pub fn load_for(path: &Path, host: &Host) -> Result<Config, Diagnostics> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics::single(Diagnostic::new(
            &file,
            None,
            "",
            format!("cannot read the file: {e}"),
        ))
    })?;
    parse(&file, &text, host)
}

/// Parses and validates `text` (named `file` in messages) against `host`.
pub fn parse(file: &str, text: &str, host: &Host) -> Result<Config, Diagnostics> {
    let (config, spans, mut errors) = reader::read(file, text);
    if let Some(config) = &config {
        errors.extend(
            validate::validate(config, host)
                .into_iter()
                .map(|(path, msg)| Diagnostic::new(file, spans.locate(text, &path), &path, msg)),
        );
    }
    // File order; a diagnostic without a position goes first (whole-file errors).
    errors.sort_by_key(|d| d.position);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(Diagnostics(errors)),
    }
}
